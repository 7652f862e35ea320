"""Plan -> FetchImages -> CropBoxes as one Beam pipeline against the faulty local server."""
import collections

import apache_beam as beam
import pandas as pd

from pipelines import cli, options, plan
from pipelines.crop_stage import CropBoxes
from pipelines.demo import server
from pipelines.fetch_stage import FetchImages
from schemas.records import failures_of, tasks_of
from tests.conftest import collect, collected, image_rows, make_pipeline


def _run(files, tmp_path, *extra):
    args = cli.parse("build", ["--classes", "Hamburger", "Sandwich", *files.flags(),
                               "--output_dir", str(tmp_path), "--allow_private_network",
                               "--cache_dir", str(tmp_path / "cache"), "--fetch_timeout_s",
                               "0.5", "--fetch_backoff_s", "0.01", "--fetch_attempts", "2",
                               "--image_size", "64", "--image_source", "original",
                               "--max_image_bytes", "2000000", *extra])
    settings = options.settings(vars(args), "build")
    config, _ = plan.PlanConfig.from_settings(settings.plan)
    with make_pipeline() as p:
        batches, plan_failures, _ = p | plan.PlanImages(config, str(tmp_path / "scratch"))
        tasks = batches | beam.FlatMap(lambda kv: tasks_of(kv[1]))
        photos, fetch_failures = tasks | FetchImages(settings.fetch)
        crops, crop_failures = photos | CropBoxes(settings.crop)
        collect(crops | beam.Map(lambda c: (c.key, c.box.label, c.source, len(c.jpeg))),
                tmp_path / "crops.pkl", "Crops")
        plan_failures = plan_failures | beam.FlatMap(failures_of)
        collect((plan_failures, fetch_failures, crop_failures) | beam.Flatten(),
                tmp_path / "failures.pkl", "Failures")
    return collected(tmp_path / "crops.pkl"), collected(tmp_path / "failures.pkl")


def test_every_box_is_one_crop_or_one_failure_with_faults(photo_site, tmp_path):
    files, srv = photo_site
    images = image_rows(files.images_csv)
    faults = {img.image_id: kind for img, kind in zip(images, server.FAULTS)}
    srv.reset(faults=faults)
    crops, failures = _run(files, tmp_path)
    boxes = pd.read_csv(files.bbox_csv)
    selected = boxes[boxes.LabelName.isin(["/m/0cdn1", "/m/0l515"])]
    box_failures = [f for f in failures if f.mid]
    assert len(crops) + len(box_failures) == len(selected)
    keys = [c[0] for c in crops] + [(f.image_id, f.box_index) for f in box_failures
                                    if f.stage != "join"]
    assert len(keys) == len(set(keys))  # no box both cropped and failed, or twice
    got = {f.image_id: f.reason for f in failures if f.stage == "fetch"}
    want = {i: server.FAULT_OUTCOMES[k][0] for i, k in faults.items() if server.FAULT_OUTCOMES[k][0]}
    assert got == want
    assert collections.Counter(f.reason for f in failures if f.stage == "join") == {"no_image_row": 2}
    cropped_images = {c[0][0] for c in crops}
    assert {i for i, k in faults.items() if k in ("error_then_ok", "rate_limited")} <= cropped_images
    assert all(size > 500 for *_, size in crops)


def test_a_corrupt_photo_without_checksum_fails_at_crop(photo_site, tmp_path):
    files, srv = photo_site
    images = [i for i in image_rows(files.images_csv) if i.thumbnail_url]
    srv.reset(faults={images[0].image_id: "corrupt_jpeg"}, fault_routes=("thumbnail",))
    crops, failures = _run(files, tmp_path, "--image_source", "thumbnail")
    assert {(f.stage, f.reason) for f in failures if f.image_id == images[0].image_id} == {
        ("crop", "not_an_image")}


def test_fallback_rescues_faulty_originals_and_rerun_uses_the_cache(photo_site, tmp_path):
    files, srv = photo_site
    srv.reset(fault_rate=0.4, fault_kinds=("not_found", "html", "wrong_md5"))
    sources = ["--image_source", "original", "cvdf", "--cvdf_base_url", srv.base_url]
    crops, failures = _run(files, tmp_path, *sources)
    assert [f.reason for f in failures] == ["no_image_row"] * 2
    assert {c[2] for c in crops} == {"original", "cvdf"}
    requests = srv.total_requests()
    assert requests > 0
    again, _ = _run(files, tmp_path, *sources)
    assert srv.total_requests() == requests  # not one more request
    assert sorted(again) == sorted(crops)
