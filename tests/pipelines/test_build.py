"""`build` end to end: TFDS loads it, nothing is lost, rebuilds are byte-identical, verify."""
import json
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds

from pipelines import build, crop, verify, write
from schemas.records import Failure
from tests.conftest import build_argv, image_rows, shard_digests as _shard_digests

FAULTS = ("not_found", "placeholder", "wrong_md5", "error_then_ok", "html")


_argv = build_argv


def _faulty(files, srv):
    images = image_rows(files.images_csv)
    srv.reset(faults={img.image_id: kind for img, kind in zip(images[5:], FAULTS)})


@pytest.fixture(scope="module")
def built(_photo_site, tmp_path_factory):
    files, srv = _photo_site
    _faulty(files, srv)
    out = tmp_path_factory.mktemp("build")
    assert build.main(_argv(files, out / "a", out / "cache_a")) == 0
    srv.reset()
    return files, out, out / "a" / "hamburger_sandwich" / "1.0.0"


def test_tfds_loads_every_split_with_the_reported_counts(built):
    files, out, folder = built
    report = json.loads((folder / write.REPORT_FILE).read_text())
    builder = tfds.builder_from_directory(str(folder))
    assert builder.info.features["label"].names == ["Hamburger", "Sandwich"]
    for split, info in report["splits"].items():
        ds = builder.as_dataset(split=split, as_supervised=True)
        images = list(ds.as_numpy_iterator())
        assert len(images) == info["examples"] == builder.info.splits[split].num_examples
        assert all(img.shape == (64, 64, 3) and label in (0, 1) for img, label in images)
    assert sum(v["total"] for v in report["examples"].values()) == sum(
        s["examples"] for s in report["splits"].values())
    assert (folder / write.COMPLETED_FILE).read_text().strip() == report["fingerprint"]
    assert report["environment"]["jpeg_decoder"] == crop.decoder_name()
    assert report["environment"]["packages"]["pillow"] == __import__("PIL").__version__


def test_manifest_plus_failures_equal_the_plan(built):
    files, out, folder = built
    manifest = pq.read_table(folder / write.MANIFEST_FILE).to_pandas()
    failures = [Failure.from_json(l) for l in open(folder / write.FAILURES_FILE)]
    boxes = pd.read_csv(files.bbox_csv)
    selected = boxes[boxes.LabelName.isin(["/m/0cdn1", "/m/0l515"])]
    box_failures = [f for f in failures if f.mid]
    assert len(manifest) + len(box_failures) == len(selected)
    assert {f.reason for f in failures if f.stage == "fetch"} == {"not_found", "placeholder",
                                                                   "checksum", "not_an_image"}
    report = json.loads((folder / write.REPORT_FILE).read_text())
    assert report["invariant"]["lost"] == 0
    row = manifest.iloc[0]
    assert row.shard.startswith("hamburger_sandwich-") and len(row.jpeg_sha256) == 64
    attribution = (folder / write.ATTRIBUTION_FILE).read_text()
    assert all(i in attribution for i in manifest.image_id.unique())


def test_verify_passes_then_fails_after_one_byte_changes(built, tmp_path):
    files, out, folder = built
    assert verify.main([str(folder)]) == 0
    copy = tmp_path / "copy"
    os.makedirs(copy)
    for name in os.listdir(folder):
        if (folder / name).is_file():
            (copy / name).write_bytes((folder / name).read_bytes())
    shard = next(n for n in sorted(os.listdir(copy)) if "-train.tfrecord-" in n)
    data = bytearray((copy / shard).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / shard).write_bytes(bytes(data))
    result = verify.verify(str(copy))
    assert not result["ok"] and result["missing"] > 0
    assert verify.main([str(copy)]) == 1


def test_rebuild_in_multiprocessing_mode_gives_identical_shards(built, _photo_site):
    files, out, folder = built
    _, srv = _photo_site
    _faulty(files, srv)
    argv = _argv(files, out / "b", out / "cache_b", "--direct_running_mode",
                 "multi_processing", "--direct_num_workers", "2")
    assert build.main(argv) == 0
    srv.reset()
    other = out / "b" / "hamburger_sandwich" / "1.0.0"
    assert _shard_digests(other) == _shard_digests(folder)
    assert len(_shard_digests(folder)) == 9
    a = json.loads((folder / write.REPORT_FILE).read_text())
    b = json.loads((other / write.REPORT_FILE).read_text())
    assert a["fingerprint"] == b["fingerprint"] and a["shard_sha256"] == b["shard_sha256"]
    # and the files around them, whatever the bundles were (a fresh cache: same failures)
    assert a["file_sha256"] == b["file_sha256"]


def test_completed_dataset_is_not_overwritten_without_the_flag(built, capsys):
    files, out, folder = built
    assert build.main(_argv(files, out / "a", out / "cache_a")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (folder / write.COMPLETED_FILE).exists()


@pytest.mark.parametrize("size", ["nan", "inf", "1e-9", "0", "-1"])
def test_a_shard_size_with_no_whole_byte_fails_before_the_pipeline(_photo_site, tmp_path, size,
                                                                   capsys):
    files, _ = _photo_site
    argv = _argv(files, tmp_path / "out", tmp_path / "cache", "--shard_size_mb", size)
    assert build.main(argv) == 2
    assert "--shard_size_mb must be a finite size of at least one byte" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_report_reproduces_the_build_and_command_line_wins(built, _photo_site, tmp_path):
    files, out, folder = built
    _, srv = _photo_site
    _faulty(files, srv)
    report = folder / write.REPORT_FILE
    assert build.main(["--config", str(report), "--output_dir", str(tmp_path / "c"),
                       "--cache_dir", str(tmp_path / "cache"), "--export_folders",
                       str(tmp_path / "folders")]) == 0
    srv.reset()
    again = tmp_path / "c" / "hamburger_sandwich" / "1.0.0"
    assert _shard_digests(again) == _shard_digests(folder)
    manifest = pq.read_table(folder / write.MANIFEST_FILE).to_pandas()
    exported = sorted(os.path.relpath(os.path.join(d, f), tmp_path / "folders")
                      for d, _, fs in os.walk(tmp_path / "folders") for f in fs)
    assert exported == sorted(f"{r.split}/{r.label}/{r.image_id}_{r.box_index}.jpg"
                              for r in manifest.itertuples())


def test_yaml_config_flags(tmp_path):
    from pipelines import cli, options
    cfg = tmp_path / "c.yaml"
    cfg.write_text("classes: [Hamburger, Sandwich]\ninclude_subclasses: true\nseed: 3\n"
                   "exclude: []\n")
    s = options.settings(vars(cli.parse("build", ["--config", str(cfg), "--seed", "5"])),
                         "build")
    assert (s.selection.classes, s.selection.include_subclasses, s.splits.seed) == (
        ("Hamburger", "Sandwich"), True, 5)


def test_dataset_names_and_versions_are_checked():
    assert write.default_dataset_name(["Hamburger", "Submarine sandwich"]) == \
        "hamburger_submarine_sandwich"
    with pytest.raises(ValueError, match="dataset_version"):
        write.DatasetLayout("/tmp", "x", "1.0")
    with pytest.raises(ValueError, match="dataset_name"):
        write.DatasetLayout("/tmp", "Bad-Name", "1.0.0")


def test_a_build_that_loses_records_is_not_marked_completed(_photo_site, tmp_path, monkeypatch):
    """If a runner drops records, the invariant catches it: exit 1 and no COMPLETED."""
    files, srv = _photo_site
    srv.reset()
    real = build._finalize

    def dropping(_, layout, labels, shards, *rest):
        return real(_, layout, labels, list(shards)[1:], *rest)  # lose a shard

    monkeypatch.setattr(build, "_finalize", dropping)
    assert build.main(_argv(files, tmp_path, tmp_path / "cache")) == 1
    folder = tmp_path / "hamburger_sandwich" / "1.0.0"
    report = json.loads((folder / write.REPORT_FILE).read_text())
    assert report["invariant"]["lost"] > 0
    assert not (folder / write.COMPLETED_FILE).exists()


def test_a_build_where_every_photo_fails_is_an_error_not_an_empty_dataset(_photo_site, tmp_path,
                                                                         capsys):
    files, srv = _photo_site
    srv.reset(fault_rate=1.0, fault_kinds=("not_found",))
    assert build.main(_argv(files, tmp_path, tmp_path / "cache")) == 1
    srv.reset()
    assert "no box became an example" in capsys.readouterr().err
    folder = tmp_path / "hamburger_sandwich" / "1.0.0"
    failures = [Failure.from_json(l) for l in open(folder / write.FAILURES_FILE)]
    assert {f.reason for f in failures if f.stage == "fetch"} == {"not_found"}
    assert not (folder / write.COMPLETED_FILE).exists()
