"""`--file_format array_record`: random-access shards in the TFDS layout, deterministic,
loadable with `as_data_source`, checked by `verify`, drawn by previews, read by the trainer
as the TFRecord shards of the same build are; and the README's Grain example runs."""
import json
import os
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds

from pipelines import build, verify, write
from tests.conftest import build_argv, shard_digests

README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")


@pytest.fixture(scope="module")
def builds(_photo_site, tmp_path_factory):
    """The same config built as ArrayRecord (twice, once in multi-processing mode) and as
    TFRecord."""
    files, srv = _photo_site
    srv.reset()
    out = tmp_path_factory.mktemp("array_record")
    folders = {}
    for name, extra in (("ar", ["--file_format", "array_record"]),
                        ("ar_mp", ["--file_format", "array_record", "--no_previews",
                                   "--direct_running_mode", "multi_processing",
                                   "--direct_num_workers", "2"]),
                        ("tf", ["--no_previews"])):
        assert build.main(build_argv(files, out / name, out / "cache", *extra)) == 0
        folders[name] = out / name / "hamburger_sandwich" / "1.0.0"
    return folders


def test_shards_are_array_records_loadable_as_a_data_source_with_the_manifest_counts(builds):
    folder = builds["ar"]
    names = sorted(os.listdir(folder))
    assert [n for n in names if ".array_record-" in n] and not [n for n in names if ".tfrecord-" in n]
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info["fileFormat"] == "array_record"
    manifest = pq.read_table(folder / write.MANIFEST_FILE).to_pandas()
    builder = tfds.builder_from_directory(str(folder))
    for split, count in manifest.split.value_counts().items():
        source = builder.as_data_source(split=split)
        assert len(source) == count
        example = source[len(source) - 1]  # random access
        assert example["image"].shape == (64, 64, 3) and example["label"] in (0, 1)
    assert all(manifest.shard.str.contains(".array_record-"))


def test_an_array_record_build_verifies_and_has_previews(builds):
    result = verify.verify(str(builds["ar"]))
    assert result["ok"], result["problems"]
    assert result["examples_read"] == result["examples_in_manifest"] > 50
    previews = builds["ar"] / "previews"
    assert (previews / "crops.png").stat().st_size > 1000


def test_two_array_record_builds_are_byte_identical_across_runners(builds):
    a, b = shard_digests(builds["ar"]), shard_digests(builds["ar_mp"])
    assert a == b and len(a) == 9
    report = json.loads((builds["ar"] / write.REPORT_FILE).read_text())
    assert report["shard_sha256"] == a  # empty shards included: they hold a footer


def test_the_trainer_reads_both_formats_alike(builds):
    from model import data
    seen = {}
    for name in ("ar", "tf"):
        ds = data.make_dataset(str(builds[name]), "train", 64, 8, training=False)
        images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds.unbatch()])
        seen[name] = sorted((int(l), img.tobytes()) for img, l in zip(images, labels))
    assert seen["ar"] == seen["tf"] and len(seen["ar"]) > 40


def test_the_readme_grain_example_runs(builds):
    text = open(README).read()
    block = re.search(r"```python\n(import grain.*?)```", text, re.S).group(1)
    assert "as_data_source" in block
    code = block.replace('"out/hamburger_sandwich/1.0.0"', repr(str(builds["ar"])))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["images"].shape[1:] == (64, 64, 3) and len(scope["labels"]) == 16
    assert np.isin(scope["labels"], [0, 1]).all()
