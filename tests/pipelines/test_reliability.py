"""Runs that survive what happens to real jobs: kills, full disks, many faults at once."""
import collections
import errno
import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from pipelines.demo import server
from pipelines import build, files, verify, write
from tests.conftest import build_argv, image_rows, shard_digests

CLASSES = ["/m/0cdn1", "/m/0l515"]


def _argv(files_, out, cache, *extra):
    return build_argv(files_, out, cache, "--fetch_timeout_s", "0.5", "--image_size", "48",
                      "--num_shards", "2", "--no_previews", *extra)


_shards = shard_digests


def test_killed_builds_resume_to_the_identical_dataset(photo_site, tmp_path):
    files_, srv = photo_site
    assert build.main(_argv(files_, tmp_path / "ref", tmp_path / "cache_ref")) == 0
    expected = _shards(tmp_path / "ref" / "hamburger_sandwich" / "1.0.0")
    srv.reset(latency_s=0.05)
    rng = random.Random(7)
    argv = [sys.executable, "-m", "pipelines.build",
            *_argv(files_, tmp_path / "out", tmp_path / "cache", "--fetch_concurrency", "2")]
    dataset = tmp_path / "out" / "hamburger_sandwich" / "1.0.0"
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(argv + ["--overwrite"], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 5.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        # Killed before the end: no COMPLETED. Killed after it (while exiting): whole.
        if (dataset / write.COMPLETED_FILE).exists():
            assert verify.verify(str(dataset))["ok"]
    assert kills >= 2
    srv.reset()
    done = subprocess.run(argv + ["--overwrite"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _shards(dataset) == expected
    assert (dataset / write.COMPLETED_FILE).exists()
    assert list((tmp_path / "cache" / ".tmp").glob("*")) == []  # no partial download left
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_disk_trouble_fails_clearly_and_leaves_no_completed(photo_site, tmp_path, monkeypatch,
                                                           capsys, code):
    files_, srv = photo_site
    real = files.open_for_write

    def failing(path):
        if ".tfrecord-" in path:
            raise OSError(code, os.strerror(code), path)
        return real(path)

    monkeypatch.setattr(files, "open_for_write", failing)
    assert build.main(_argv(files_, tmp_path, tmp_path / "cache")) == 1
    err = capsys.readouterr().err
    assert "not marked COMPLETED" in err and os.strerror(code) in err
    assert not (tmp_path / "hamburger_sandwich" / "1.0.0" / write.COMPLETED_FILE).exists()


def test_mixed_faults_at_concurrency_64_lose_nothing_and_keep_the_retry_budget(photo_site, tmp_path):
    files_, srv = photo_site
    images = image_rows(files_.images_csv)
    kinds = sorted(server.FAULT_OUTCOMES)
    # 20% of photos get a fault, every kind at least once
    faulty = images[:max(len(kinds), len(images) // 5)]
    faults = {img.image_id: kinds[i % len(kinds)] for i, img in enumerate(faulty)}
    srv.reset(faults=faults)
    out = tmp_path / "out"
    assert build.main(_argv(files_, out, tmp_path / "cache", "--fetch_concurrency", "64",
                            "--max_image_bytes", "2000000")) == 0
    dataset = out / "hamburger_sandwich" / "1.0.0"
    import json
    report = json.loads((dataset / write.REPORT_FILE).read_text())
    assert report["invariant"]["lost"] == 0
    boxes = pd.read_csv(files_.bbox_csv)
    selected = boxes[boxes.LabelName.isin(CLASSES)]
    failures = [json.loads(l) for l in open(dataset / write.FAILURES_FILE)]
    manifest = pd.read_parquet(dataset / write.MANIFEST_FILE)
    assert len(manifest) + sum(1 for f in failures if f["mid"]) == len(selected)
    got = {f["image_id"]: f["reason"] for f in failures if f["stage"] == "fetch"}
    assert got == {i: server.FAULT_OUTCOMES[k][0] for i, k in faults.items() if server.FAULT_OUTCOMES[k][0]}
    planned_images = set(manifest.image_id) | {f["image_id"] for f in failures
                                               if f["stage"] in ("fetch", "crop")}
    # requests per photo: 1 when healthy, the fault's budget otherwise (retries included)
    budget = sum(server.FAULT_OUTCOMES[faults[i]][1] if i in faults else 1 for i in planned_images)
    assert srv.total_requests() == budget
    assert collections.Counter(f["reason"] for f in failures if f["stage"] == "join") == {
        "no_image_row": 2}
