"""Packaging for open-sandwiches.

This file is also what Dataflow workers install (`--setup_file ./setup.py`), so it must
list every runtime dependency the pipeline's DoFns import.

    pip install -e '.[dev]'

`pipelines._jpegregion` is optional: it needs a C compiler and the headers of libjpeg-turbo
1.5 or later (Debian/Ubuntu: libjpeg-dev). Where it cannot be built the install still
succeeds and crops come from whole-image decodes, with the same bytes (pipelines/crop.py).
"""
import re
from pathlib import Path

from setuptools import Extension, find_packages, setup

# The one version of the tool lives in pipelines/__init__.py (read, not imported: an
# install must not need the package's dependencies yet).
VERSION = re.search(r'^__version__ = "([^"]+)"', (Path(__file__).parent / "pipelines" /
                                                   "__init__.py").read_text(), re.M).group(1)

setup(
    name="open-sandwiches",
    version=VERSION,
    description=(
        "Turn any Open Images boxable classes into a cropped, sharded TFDS dataset "
        "with Apache Beam, and train a Keras classifier on it."
    ),
    python_requires=">=3.10",
    packages=find_packages(include=["pipelines", "pipelines.*", "model", "model.*",
                                    "schemas", "schemas.*"]),
    package_data={"pipelines": ["data/*.csv", "data/*.json", "data/*.md", "data/vega/*",
                                "demo/previews/*.png"]},
    include_package_data=True,
    ext_modules=[Extension("pipelines._jpegregion", ["pipelines/_jpegregion.c"],
                           libraries=["jpeg"], optional=True)],
    install_requires=[
        # google-crc32c: WriteToTFRecord and TFRecord CRCs need a fast CRC package.
        "apache-beam>=2.60",
        "google-crc32c>=1.5",
        "pyarrow>=14",
        "pandas>=2.0",
        "numpy>=1.24",
        "requests>=2.31",
        "pillow>=10.0",
        "simplejpeg>=1.7",
        "tensorflow>=2.16",
        # TensorFlow 2.21 no longer depends on it; the trainer's TensorBoard logs need it.
        "tensorboard>=2.16",
        "tensorflow-datasets>=4.9.4",
        # --file_format array_record: random-access shards (tfds as_data_source, Grain).
        "array-record>=0.5",
        "pyyaml>=6.0",
        "matplotlib>=3.7",
        # Progress bars of fetch, crop and write when a build runs in a terminal.
        "tqdm>=4.60",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.2",
            "hypothesis>=6.90",
            "psutil>=5.9",
            # The Dataflow test builds a job offline: it needs the gcp extra, and Beam's
            # stager packages setup.py with `python -m build`.
            "apache-beam[gcp]>=2.60",
            "build>=1.0",
            # The README's random-access example (a Grain DataLoader over as_data_source)
            # runs as a test.
            "grain>=0.2",
        ],
        "gcp": ["apache-beam[gcp]>=2.60"],
    },
    entry_points={"console_scripts": ["open-sandwiches = pipelines.cli:main"]},
)
