"""What a built dataset says about itself in dataset_info.json: where the data comes from,
how to cite it and under which licences it may be shared (TFDS's DatasetInfo fields
`homepage`, `citation` and `license`, the last kept under `redistributionInfo`)."""
from __future__ import annotations

HOMEPAGE = "https://storage.googleapis.com/openimages/web/index.html"

# The Open Images paper, as the dataset's site asks it to be cited.
CITATION = """@article{OpenImages,
  author = {Alina Kuznetsova and Hassan Rom and Neil Alldrin and Jasper Uijlings and Ivan Krasin and Jordi Pont-Tuset and Shahab Kamali and Stefan Popov and Matteo Malloci and Alexander Kolesnikov and Tom Duerig and Vittorio Ferrari},
  title = {The Open Images Dataset V4: Unified image classification, object detection, and visual relationship detection at scale},
  year = {2020},
  journal = {IJCV}
}"""

LICENSE = ("The annotations (labels and boxes) are licensed by Google LLC under CC BY 4.0. "
           "The photos are listed as having a CC BY 2.0 licence; each example's own licence, "
           "author and landing page are in manifest.parquet and ATTRIBUTION.md. To share "
           "this dataset or images from it, credit the authors, link the licences, and say "
           "that the photos were changed (cropped and resized). Check each photo's licence "
           "before other uses.")


def dataset_metadata(labels) -> dict:
    """The keyword arguments of tfds.folder_dataset.write_metadata that describe a build."""
    return {"description": f"Open Images crops of {', '.join(labels)}, built by "
                           f"open-sandwiches.",
            "homepage": HOMEPAGE, "citation": CITATION, "license": LICENSE}
