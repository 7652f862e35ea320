"""The trainer on a dataset built by the real pipeline from generated photos."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from model import config as train_config
from model import evaluate, network, train


def test_training_writes_model_history_curves_config_and_log(trained):
    dataset, model_dir, summary = trained
    for name in ("model.keras", "best.weights.h5", "history.json", "training_log.csv",
                 "training_curves.png", "config.json", "labels.json", "train.log",
                 "progress.json"):
        assert os.path.getsize(os.path.join(model_dir, name)) > 0, name
    assert not os.path.exists(os.path.join(model_dir, "backup"))  # removed once complete
    history = json.load(open(os.path.join(model_dir, "history.json")))
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["loss"]) == summary["epochs_run"] <= 8
    log_lines = open(os.path.join(model_dir, "train.log")).read().splitlines()
    assert log_lines[0] == "phase train: learning rate 0.001, epochs 1 to 8 at most"
    assert [line.split(":")[0] for line in log_lines[1:]] == [
        f"epoch {e}/8" for e in range(1, summary["epochs_run"] + 1)]
    assert json.load(open(os.path.join(model_dir, "progress.json"))) == {
        "phases_done": {"train": summary["epochs_run"]}, "complete": True}
    assert Image.open(os.path.join(model_dir, "training_curves.png")).size == (1000, 400)
    saved = json.load(open(os.path.join(model_dir, "config.json")))
    assert saved["seed"] == 1 and saved["batch_size"] == 16 and saved["arch"] == "simple_cnn"


def test_two_classes_visible_only_in_the_box_reach_90_percent(trained):
    dataset, model_dir, _ = trained
    metrics = evaluate.evaluate(model_dir)
    test = metrics["test"]
    assert test["accuracy"] >= 0.9, test
    assert np.array(test["confusion_matrix"]).sum() == test["examples"] > 10
    for label in ("Hamburger", "Sandwich"):
        assert 0 <= test["per_class"][label]["precision"] <= 1
        assert test["per_class"][label]["support"] > 0
    saved = json.load(open(os.path.join(model_dir, "metrics.json")))
    assert saved["test"]["accuracy"] == test["accuracy"] and "validation" in saved
    for name in ("confusion_matrix.png", "mistakes.png"):
        assert Image.open(os.path.join(model_dir, name)).size[0] > 100


def test_reloaded_model_gives_the_same_predictions(trained):
    import keras

    from model import data
    dataset, model_dir, summary = trained
    images, _ = next(iter(data.make_dataset(dataset, "test", 64, 32, False)))
    before = summary["model"].predict_on_batch(images)
    after = keras.models.load_model(os.path.join(model_dir, "model.keras")).predict_on_batch(images)
    np.testing.assert_allclose(before, after, rtol=1e-5, atol=1e-6)


def test_predict_prints_probabilities_for_image_files(trained, tmp_path, capsys):
    import tensorflow_datasets as tfds
    dataset, model_dir, _ = trained
    example = next(iter(tfds.builder_from_directory(dataset).as_dataset(split="test")))
    path = tmp_path / "crop.png"
    Image.fromarray(example["image"].numpy()).save(path)
    [(_, probs)] = evaluate.predict(model_dir, [str(path)])
    assert set(probs) == {"Hamburger", "Sandwich"} and abs(sum(probs.values()) - 1) < 1e-6
    truth = ("Hamburger", "Sandwich")[int(example["label"])]
    assert max(probs, key=probs.get) == truth
    assert evaluate.predict_main([model_dir, str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: ")


def test_balanced_class_weights_follow_the_manifest(dataset):
    import pyarrow.parquet as pq
    m = pq.read_table(os.path.join(dataset, "manifest.parquet")).to_pandas()
    counts = m[m.split == "train"].label_index.value_counts()
    weights = train.balanced_class_weight(dataset, 2)
    assert weights[0] * counts[0] == pytest.approx(weights[1] * counts[1])
    assert weights[0] * counts[0] == pytest.approx(counts.sum() / 2)


def test_imagenet_weights_offline_fail_clearly():
    with pytest.raises(network.OfflineWeightsError, match="--weights none"):
        network.make_model((96, 96, 3), 2, "mobilenet_v2", weights="imagenet")


def test_transfer_arch_loads_weights_from_a_local_file(tmp_path):
    first = network.make_model((64, 64, 3), 3, "mobilenet_v2", weights="none", augment=False)
    path = str(tmp_path / "mnv2.weights.h5")
    first.save_weights(path)
    second = network.make_model((64, 64, 3), 3, "mobilenet_v2", weights=path, augment=False)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(first.predict_on_batch(x), second.predict_on_batch(x), rtol=1e-5)
    with pytest.raises(FileNotFoundError):
        network.make_model((64, 64, 3), 3, "mobilenet_v2", weights=str(tmp_path / "nope.h5"))


def test_config_file_and_flags(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("dataset_dir: d\nepochs: 7\naugment: false\nclass_weight: balanced\n")
    c = train_config.from_args(["--config", str(cfg), "--epochs", "3"])
    assert (c.dataset_dir, c.epochs, c.augment, c.class_weight, c.batch_size) == (
        "d", 3, False, "balanced", 16)
    with pytest.raises(ValueError, match="dataset_dir"):
        train_config.from_args([])
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown keys"):
        train_config.from_args(["--config", str(bad), "--dataset_dir", "d"])


def test_model_package_never_imports_beam():
    import subprocess
    import sys
    code = ("import sys, model.train, model.evaluate, model.data, model.network; "
            "print(sorted(m for m in sys.modules if m.startswith('apache_beam')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
