"""A build as the command line and the Python API run it: progress bars, --json, the
metadata a dataset carries (homepage, citation, licence, the tool's version)."""
import json
import logging
import re

import tensorflow_datasets as tfds

import pipelines
from pipelines import about, api, cli, crop, progress, write
from tests.conftest import build_argv, shard_digests


def test_build_json_is_the_report_and_the_dataset_says_where_it_comes_from(
        photo_site, tmp_path, capsys):
    files, srv = photo_site
    assert cli.main(["build", *build_argv(files, tmp_path / "out", tmp_path / "cache"),
                     "--no_previews", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # one document: logs and errors went to stderr
    folder = tmp_path / "out" / "hamburger_sandwich" / "1.0.0"
    assert result.pop("dataset_dir") == str(folder)
    assert result == json.loads((folder / write.REPORT_FILE).read_text())
    assert result["tool"] == {"name": "open-sandwiches", "version": pipelines.__version__}
    assert "\r" not in captured.err  # not a terminal: no bars
    info = tfds.builder_from_directory(str(folder)).info
    assert info.homepage == about.HOMEPAGE
    assert info.citation.startswith("@article{OpenImages,") and "Kuznetsova" in info.citation
    assert "journal = {IJCV}" in info.citation and "year = {2020}" in info.citation
    assert "CC BY 4.0" in info.redistribution_info.license
    assert (folder / "LICENSE").read_text().strip() == about.LICENSE


def _api_kwargs(files, cache) -> dict:
    """build_argv's small fast build, as the Python API's keywords."""
    return dict(classes=["Hamburger", "Sandwich"], class_descriptions=files.class_descriptions,
                hierarchy=files.hierarchy, bbox_csv=[files.bbox_csv],
                images_csv=[files.images_csv], allow_private_network=True,
                cache_dir=str(cache), image_source=["original"], fetch_timeout_s=1,
                fetch_attempts=2, fetch_backoff_s=0.01, num_shards=3, no_previews=True)


def test_bars_count_fetch_crop_and_write_with_rate_and_eta_and_change_no_byte(
        photo_site, tmp_path, capsys):
    files, srv = photo_site
    plain = api.build(**_api_kwargs(files, tmp_path / "cache"), output_dir=str(tmp_path / "a"),
                      crop=crop.CropSpec(image_size=64))
    capsys.readouterr()
    report = api.build(**_api_kwargs(files, tmp_path / "cache"), output_dir=str(tmp_path / "b"),
                       image_size=64, progress_bars=True)
    err = capsys.readouterr().err
    finals = {label: line for line in re.split(r"[\r\n]", err)
              for label in ("fetch", "crop", "write") if line.startswith(f"{label}: 100%")}
    assert set(finals) == {"fetch", "crop", "write"}, err[-2000:]
    n = report["invariant"]["examples"]
    assert n == report["invariant"]["planned_boxes"] > 0
    assert re.search(r"\| (\d+)/\1 \[\d\d:\d\d<00:00, +[\d.]+photo/s, failed 0\]", finals["fetch"])
    assert re.search(rf"\| {n}/{n} \[\d\d:\d\d<00:00, +[\d.]+box/s, failed 0\]", finals["crop"])
    assert re.search(rf"\| {n}/{n} \[\d\d:\d\d<00:00, +[\d.]+crop/s, bytes [\d.]+ MiB\]",
                     finals["write"])
    assert shard_digests(report["dataset_dir"]) == shard_digests(plain["dataset_dir"])
    assert report["fingerprint"] == plain["fingerprint"]  # the same build, drawn or not


def test_without_bars_progress_is_steady_log_lines(caplog):
    caplog.set_level(logging.INFO, logger="open_sandwiches.progress")
    p = progress.Progress("fetch", every_s=0)
    p.add(photos=1, failed=0)
    p.add(photos=1, failed=1)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "fetch: photos 1, failed 0", "fetch: photos 2, failed 1"]
