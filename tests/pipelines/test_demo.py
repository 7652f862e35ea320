"""The demo end to end in a temp folder, and a rerun from its cache."""
import json

from PIL import Image

from pipelines.demo import run


def test_demo_runs_end_to_end_and_reruns_from_the_cache(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run.main(["--output_dir", str(out), "--images", "120", "--epochs", "3",
                     "--image_size", "64", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "demo done" in text and "test accuracy" in text and "failures by reason" in text
    dataset = out / "dataset" / "hamburger_sandwich" / "1.0.0"
    assert list((out / "plan").glob("plan-00000-of-*.parquet"))
    for path in (out / "plan" / "summary.json", dataset / "COMPLETED",
                 dataset / "manifest.parquet", out / "model" / "model.keras",
                 out / "model" / "metrics.json"):
        assert path.exists(), path
    report = json.loads((dataset / "build_report.json").read_text())
    assert report["invariant"]["lost"] == 0
    assert any(k.startswith("fetch/") for k in report["failures_by_stage_and_reason"])
    counters = report["metrics"]["counters"]
    assert counters["fetch/from_thumbnail"] > 0  # the fallback rescued faulty originals
    assert Image.open(out / "model" / "confusion_matrix.png").size[0] > 100
    first_shards = report["shard_sha256"]

    assert run.main(["--output_dir", str(out), "--images", "120", "--epochs", "1",
                     "--image_size", "64", "--quiet"]) == 0
    again = json.loads((dataset / "build_report.json").read_text())
    assert again["metrics"]["counters"].get("fetch/requests", 0) == 0
    assert again["shard_sha256"] == first_shards
