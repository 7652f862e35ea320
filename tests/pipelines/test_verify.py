"""`verify` against tampering (issue 15, item 7): records edited and re-framed with fresh,
valid CRCs, and shards whose bytes differ from build_report.json.

The dataset is built once, from photos served on 127.0.0.1; every test tampers with a copy.
"""
import hashlib
import json
import shutil

import pytest
import tensorflow as tf

from pipelines import build, tfrecord, verify, write
from tests.conftest import build_argv


@pytest.fixture(scope="module")
def dataset(_photo_site, tmp_path_factory):
    files, srv = _photo_site
    srv.reset()
    out = tmp_path_factory.mktemp("verify")
    assert build.main(build_argv(files, out / "ds", out / "cache", "--no_previews")) == 0
    folder = out / "ds" / "hamburger_sandwich" / "1.0.0"
    assert (folder / write.COMPLETED_FILE).exists()
    return folder


@pytest.fixture
def copy(dataset, tmp_path):
    return shutil.copytree(dataset, tmp_path / "copy")


def _train_shard(folder):
    return sorted(p for p in folder.iterdir() if "-train.tfrecord-" in p.name)[0]


def _tamper(shard, edit, index: int = 0) -> tuple[str, int]:
    """Edit the index-th example of a shard and re-frame every record (valid CRCs);
    return the edited example's key."""
    records = list(tfrecord.read_records(open(shard, "rb")))
    example = tf.train.Example.FromString(records[index])
    edit(example.features.feature)
    records[index] = example.SerializeToString(deterministic=True)
    shard.write_bytes(b"".join(tfrecord.frame(r) for r in records))
    feats = example.features.feature
    return feats["image_id"].bytes_list.value[0].decode(), feats["box_index"].int64_list.value[0]


def _update_report_digest(folder, shard) -> None:
    """What a careful tamperer does too: make build_report.json agree with the new bytes."""
    report = json.loads((folder / write.REPORT_FILE).read_text())
    report["shard_sha256"][shard.name] = hashlib.sha256(shard.read_bytes()).hexdigest()
    (folder / write.REPORT_FILE).write_text(json.dumps(report))


def test_an_untouched_dataset_verifies(dataset):
    result = verify.verify(str(dataset))
    assert result["ok"], result["problems"]
    assert result["examples_read"] == result["examples_in_manifest"] > 0


def test_a_flipped_label_with_fresh_crcs_fails_naming_the_example(copy):
    shard = _train_shard(copy)

    def flip(feats):
        feats["label"].int64_list.value[0] = 1 - feats["label"].int64_list.value[0]

    key = _tamper(shard, flip)
    _update_report_digest(copy, shard)
    result = verify.verify(str(copy))
    assert not result["ok"] and result["changed"] == 1
    [problem] = result["problems"]
    assert problem.startswith(f"changed example {key}: label manifest ")
    assert "label_index manifest" in problem
    assert verify.main([str(copy)]) == 1


def test_a_changed_box_fails_naming_the_example(copy):
    shard = _train_shard(copy)

    def widen(feats):
        bbox = feats["bbox"].float_list.value
        bbox[3] = min(1.0, bbox[3] + 0.05)  # xmax (TFDS order: ymin, xmin, ymax, xmax)

    key = _tamper(shard, widen, index=1)
    result = verify.verify(str(copy))
    assert not result["ok"]
    assert any(p.startswith(f"changed example {key}: xmax manifest ") for p in result["problems"])
    assert any(p.startswith(f"{shard.name}: sha256 ") for p in result["problems"])


def test_a_shard_whose_bytes_differ_from_the_report_fails(copy):
    """Two records swapped: the same examples, valid CRCs, other bytes."""
    shard = _train_shard(copy)
    records = list(tfrecord.read_records(open(shard, "rb")))
    assert len(records) >= 2
    records[0], records[1] = records[1], records[0]
    shard.write_bytes(b"".join(tfrecord.frame(r) for r in records))
    result = verify.verify(str(copy))
    assert not result["ok"] and result["changed"] == 0 and result["missing"] == 0
    digest = hashlib.sha256(shard.read_bytes()).hexdigest()
    assert result["problems"] == [f"{shard.name}: sha256 {digest}, build_report.json says "
                                  f"{json.loads((copy / write.REPORT_FILE).read_text())['shard_sha256'][shard.name]}"]


def test_a_record_that_is_not_an_example_is_reported(copy):
    shard = _train_shard(copy)
    records = list(tfrecord.read_records(open(shard, "rb")))
    shard.write_bytes(b"".join(tfrecord.frame(r) for r in [b"\x0a\xff not a proto"] + records[1:]))
    result = verify.verify(str(copy))
    assert not result["ok"] and result["missing"] == 1
    assert any(p.startswith(f"{shard.name}: record 1 is not an example") for p in result["problems"])


def _report(folder) -> dict:
    return json.loads((folder / write.REPORT_FILE).read_text())


def test_a_manifest_edit_in_a_column_shards_do_not_hold_fails(copy):
    """source_sha256 is the manifest's alone (verify --against trusts it): an edit there
    is caught by the manifest's own sha256, taken as the build wrote it."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pq.read_table(copy / write.MANIFEST_FILE)
    forged = table.set_column(table.column_names.index("source_sha256"), "source_sha256",
                              pa.array(["0" * 64] * table.num_rows))
    pq.write_table(forged, copy / write.MANIFEST_FILE)
    result = verify.verify(str(copy))
    assert not result["ok"]
    assert any(p.startswith(f"{write.MANIFEST_FILE}: sha256") for p in result["problems"])


def test_a_forged_failure_record_fails_the_file_digest_and_the_recount(copy):
    """A box claimed as failed that the build made an example of (or any edit of
    failures.jsonl) breaks its digest, and the recount of the invariant."""
    forged = {"box_index": 0, "detail": "forged", "image_id": "0123456789abcdef",
              "mid": "/m/0cdn1", "reason": "not_found", "stage": "fetch", "url": ""}
    with open(copy / write.FAILURES_FILE, "a") as f:
        f.write(json.dumps(forged, sort_keys=True) + "\n")
    said = _report(copy)["invariant"]["fetch_and_crop_failures"]
    problems = verify.verify(str(copy))["problems"]
    assert any(p.startswith(f"{write.FAILURES_FILE}: sha256") for p in problems), problems
    assert f"fetch and crop failures: {said + 1} in the files, {write.REPORT_FILE} says {said}" \
        in problems
    assert any(p.startswith("invariant:") for p in problems)


def test_a_report_that_claims_a_loss_fails(copy):
    report = _report(copy)
    report["invariant"]["lost"] = 5
    (copy / write.REPORT_FILE).write_text(json.dumps(report))
    problems = verify.verify(str(copy))["problems"]
    assert problems and all(p.startswith("invariant:") for p in problems), problems


@pytest.mark.parametrize("edit, problem", [
    (lambda r, f: r.update(file_sha256=["x"]), "file_sha256 is not a mapping"),
    (lambda r, f: r["file_sha256"].update({"../../../../etc/hostname": "0" * 64}),
     "file_sha256 names '../../../../etc/hostname'"),
    (lambda r, f: r["invariant"].update(planned_boxes="many"), "has no invariant to check"),
    (lambda r, f: (f / write.FAILURES_FILE).write_bytes(b"{not json\n[1, 2]\n"),
     "line 1 is not a failure record"),
])
def test_a_hostile_report_or_failures_file_is_a_problem_not_a_crash(copy, edit, problem):
    report = _report(copy)
    edit(report, copy)
    (copy / write.REPORT_FILE).write_text(json.dumps(report))
    result = verify.verify(str(copy))
    assert not result["ok"] and any(problem in p for p in result["problems"]), result
