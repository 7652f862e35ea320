"""The same build on other runners: Beam's portable runner with an EXTERNAL worker pool,
Flink's embedded cluster, and a Dataflow job built offline (dry run)."""
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest

from pipelines import build
from tests.conftest import build_argv, image_rows, shard_digests

HERE = os.path.dirname(os.path.abspath(__file__))
FLINK_JAR = "org.apache.beam:beam-runners-flink-1.19-job-server:{version}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listening on {port} after {seconds} s")


def _argv(files, out, cache, *extra):
    return build_argv(files, out, cache, "--image_size", "48", "--num_shards", "2", *extra)


_shards = shard_digests


@pytest.fixture(scope="module")
def reference(_photo_site, tmp_path_factory):
    """The in-process build every other runner must reproduce byte for byte."""
    files, srv = _photo_site
    images = image_rows(files.images_csv)
    srv.reset(faults={images[4].image_id: "not_found", images[9].image_id: "placeholder"})
    out = tmp_path_factory.mktemp("runners")
    assert build.main(_argv(files, out / "ref", out / "cache_ref")) == 0
    return files, srv, out, _shards(out / "ref" / "hamburger_sandwich" / "1.0.0")


def _env_with_venv_first() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def test_portable_runner_with_external_worker_pool(reference):
    files, srv, out, expected = reference
    images = image_rows(files.images_csv)
    srv.reset(faults={images[4].image_id: "not_found", images[9].image_id: "placeholder"})
    job_port, pool_port = _free_port(), _free_port()
    env = _env_with_venv_first()  # the worker pool starts `python` from PATH
    job = subprocess.Popen([sys.executable, "-m",
                            "apache_beam.runners.portability.local_job_service_main",
                            "--port", str(job_port)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             "--service_port", str(pool_port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(job_port, job)
        _wait_for_port(pool_port, pool)
        argv = _argv(files, out / "portable", out / "cache_portable", "--runner",
                     "PortableRunner", "--job_endpoint", f"localhost:{job_port}",
                     "--environment_type", "EXTERNAL", "--environment_config",
                     f"localhost:{pool_port}")
        assert build.main(argv) == 0
    finally:
        for proc in (job, pool):
            proc.terminate()
            proc.wait(timeout=30)
    assert _shards(out / "portable" / "hamburger_sandwich" / "1.0.0") == expected


def _flink_jar(tmp_path_factory) -> str:
    """The Flink job-server jar for our Beam version, fetched with Maven; skip with the
    reason when Java, Maven or the artifact is not available."""
    import apache_beam
    if not shutil.which("java") or not shutil.which("mvn"):
        pytest.skip("Flink needs Java and Maven on PATH to fetch its job-server jar")
    artifact = FLINK_JAR.format(version=apache_beam.__version__)
    folder = tmp_path_factory.mktemp("flink_jar")
    proc = subprocess.run(["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={artifact}",
                           f"-DoutputDirectory={folder}"], capture_output=True, text=True,
                          timeout=900)
    jars = [f for f in os.listdir(folder) if f.endswith(".jar")]
    if proc.returncode != 0 or not jars:
        reason = next((l for l in proc.stdout.splitlines() if "ERROR" in l), proc.stdout[-300:])
        reason = re.sub(r"\x1b\[[0-9;]*m", "", reason).strip()[:300]
        pytest.skip(f"Maven could not fetch {artifact}: {reason}")
    return os.path.join(folder, jars[0])


@pytest.mark.slow
def test_flink_embedded_cluster_gives_the_same_shards(reference, tmp_path_factory):
    files, srv, out, expected = reference
    jar = _flink_jar(tmp_path_factory)
    images = image_rows(files.images_csv)
    srv.reset(faults={images[4].image_id: "not_found", images[9].image_id: "placeholder"})
    argv = _argv(files, out / "flink", out / "cache_flink", "--runner", "FlinkRunner",
                 "--flink_master", "[local]", "--flink_job_server_jar", jar,
                 "--environment_type", "LOOPBACK", "--parallelism", "2")
    assert build.main(argv) == 0
    assert _shards(out / "flink" / "hamburger_sandwich" / "1.0.0") == expected


def test_dataflow_job_is_built_offline_with_our_stages(reference, tmp_path, monkeypatch):
    pytest.importorskip("apache_beam.runners.dataflow.dataflow_runner")
    pytest.importorskip("google.cloud.storage", reason="needs apache-beam[gcp] (the gcp extra)")
    import apache_beam as beam
    files, srv, out, _ = reference
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # a dead port: nothing answers
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.chdir(os.path.dirname(os.path.dirname(HERE)))  # where setup.py is
    opts, config = build.prepare(_argv(
        files, tmp_path / "out", tmp_path / "cache", "--runner", "DataflowRunner",
        "--dry_run", "True", "--project", "fake-project", "--region", "us-central1",
        "--temp_location", "gs://fake-bucket/tmp", "--setup_file", "./setup.py"))
    p = beam.Pipeline(options=opts)
    build.build_pipeline(p, config)
    result = p.run()
    names = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    for stage in ("Plan/ScanBoxes/ReadRanges", "Plan/ScanImages/CountQuotes",
                  "Plan/ScanImages/ReadRanges", "Plan/JoinBuckets", "FetchImages/Fetch",
                  "CropBoxes/Crop", "WriteDataset/Serialize", "WriteDataset/MergeShards",
                  "FailureRuns", "Finalize"):
        assert any(n.startswith(stage) for n in names), (stage, sorted(names)[:40])
