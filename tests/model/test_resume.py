"""Runs that survive SIGKILL, repeat with the same seed, and never redo a finished run."""
import csv
import glob
import json
import os

import pytest

from model import evaluate, resume, train
from tests.model.runs import history, resumed_epoch, start_killed_run

EPOCHS = 4


def flags(dataset: str, model_dir: str, *extra: str) -> list[str]:
    """A small seeded run: 32 px, 4 epochs, no early stop before the end."""
    return ["--dataset_dir", dataset, "--model_dir", model_dir, "--image_size", "32",
            "--epochs", str(EPOCHS), "--patience", "10", "--batch_size", "32", "--seed", "3",
            *extra]


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """An uninterrupted seeded run."""
    model_dir = str(tmp_path_factory.mktemp("reference"))
    assert train.main(flags(dataset, model_dir, "--quiet")) == 0
    return model_dir


def test_the_same_seed_gives_the_same_history_and_metrics(dataset, reference, tmp_path):
    again = str(tmp_path / "again")
    assert train.main(flags(dataset, again, "--quiet")) == 0
    assert len(history(reference)["loss"]) == EPOCHS
    assert history(again) == history(reference)  # exactly, every metric of every epoch
    assert evaluate.evaluate(again) == evaluate.evaluate(reference)
    other = str(tmp_path / "other_seed")
    assert train.main(flags(dataset, other, "--quiet", "--seed", "4", "--epochs", "1")) == 0
    assert history(other)["loss"] != history(reference)["loss"][:1]


def test_a_killed_run_resumes_from_its_last_finished_epoch(dataset, reference, tmp_path, capsys):
    model_dir = str(tmp_path / "killed")
    metadata = os.path.join(model_dir, "backup", "train", "training_metadata.json")
    start_killed_run(flags(dataset, model_dir), metadata, str(tmp_path / "killed.out"))
    assert not json.load(open(os.path.join(model_dir, "progress.json")))["complete"]
    assert not os.path.exists(os.path.join(model_dir, "model.keras"))
    assert train.main(flags(dataset, model_dir, "--seed", "4")) == 2
    assert "holds an unfinished run of another config (seed 3 -> 4)" in capsys.readouterr().err

    assert train.main(flags(dataset, model_dir)) == 0  # the same command again
    n = resumed_epoch(model_dir)
    assert 1 <= n < EPOCHS
    assert f"resumed after epoch {n}" in capsys.readouterr().out
    # Every epoch once, with the numbers of the run that was never interrupted.
    assert history(model_dir) == history(reference)
    with open(os.path.join(model_dir, "training_log.csv")) as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == list(range(EPOCHS))
    for name in ("model.keras", "best.weights.h5", "training_curves.png"):
        assert os.path.getsize(os.path.join(model_dir, name)) > 0
    assert not os.path.exists(os.path.join(model_dir, "backup"))

    # --overwrite starts over, as a fresh run, and removes only what the trainer wrote.
    with open(os.path.join(model_dir, "notes.txt"), "w") as f:
        f.write("mine")
    assert train.main(flags(dataset, model_dir, "--quiet", "--epochs", "1", "--overwrite")) == 0
    assert len(history(model_dir)["loss"]) == 1
    assert "resuming" not in open(os.path.join(model_dir, "train.log")).read()
    assert open(os.path.join(model_dir, "notes.txt")).read() == "mine"


def test_tensorboard_logs_every_epoch(reference):
    import tensorflow as tf
    steps: dict[str, dict[str, list[int]]] = {}
    for split in ("train", "validation"):
        for path in glob.glob(os.path.join(reference, "logs", split, "events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    steps.setdefault(split, {}).setdefault(value.tag, []).append(event.step)
    assert steps["train"]["epoch_loss"] == list(range(EPOCHS))
    assert steps["train"]["epoch_learning_rate"] == list(range(EPOCHS))
    assert steps["validation"]["epoch_accuracy"] == list(range(EPOCHS))


def test_a_finished_run_is_reported_not_redone_and_another_config_is_refused(
        dataset, reference, capsys):
    log_before = open(os.path.join(reference, "train.log")).read()
    assert train.main(flags(dataset, reference)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"already trained: {reference} holds a finished run")
    assert "--overwrite" in out
    assert open(os.path.join(reference, "train.log")).read() == log_before

    assert train.main(flags(dataset, reference, "--epochs", "2")) == 2
    err = capsys.readouterr().err
    assert "holds a finished run of another config (epochs 4 -> 2)" in err and "--overwrite" in err


def test_a_folder_the_trainer_did_not_write_is_refused(dataset, tmp_path, capsys):
    (tmp_path / "model.keras").write_text("someone else's")
    assert train.main(flags(dataset, str(tmp_path))) == 2
    assert "no config.json" in capsys.readouterr().err
    assert (tmp_path / "model.keras").read_text() == "someone else's"


def test_early_stopping_state_is_rebuilt_from_the_history():
    # (best so far, epochs without a new best in this phase), as EarlyStopping counts them
    assert resume.early_stopping_state([], 0) == (None, 0)
    assert resume.early_stopping_state([0.5, 0.4, 0.45, 0.4], 0) == (0.4, 2)  # a tie is no gain
    assert resume.early_stopping_state([0.5, 0.4, 0.45], 3) == (0.4, 0)  # a new phase starts
    assert resume.early_stopping_state([0.5, 0.4, 0.45, 0.6], 3) == (0.4, 1)
    assert resume.early_stopping_state([0.5, 0.4, 0.45, 0.3, 0.6], 3) == (0.3, 1)


def test_the_csv_log_is_cut_back_to_the_backed_up_epochs(tmp_path):
    path = str(tmp_path / "training_log.csv")
    with open(path, "w") as f:
        f.write("epoch,loss\n0,0.5\n1,0.4\n2,0.3\n")
    resume.trim_csv(path, 2)
    assert open(path).read().splitlines() == ["epoch,loss", "0,0.5", "1,0.4"]


def _tiny_model():
    import keras
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_a_kill_while_keras_rewrites_the_metadata_falls_back_one_epoch(tmp_path):
    """Keras truncates training_metadata.json, then writes it: a SIGKILL in between leaves
    it empty. The run resumes from the previous epoch's pair, or, with none, from scratch
    (and so takes its pretrained weights), instead of failing on the empty file."""
    import numpy as np
    backup_dir = str(tmp_path / "backup")
    model = _tiny_model()
    saver = resume.Backup(backup_dir)
    saver.set_model(model)
    for epoch, value in ((1, 1.0), (2, 2.0)):
        model.set_weights([np.full((2, 1), value, "float32"), np.zeros(1, "float32")])
        saver._current_epoch = epoch
        saver._save_model()
    metadata = os.path.join(backup_dir, "training_metadata.json")
    open(metadata, "w").close()  # the kill: truncated, not yet written

    restored = _tiny_model()
    backup = resume.Backup(backup_dir)
    assert backup.has_state()
    assert backup.restore(restored) == 1
    assert restored.get_weights()[0].tolist() == [[1.0], [1.0]]

    os.remove(metadata + ".bkp")
    open(metadata, "w").close()  # the same kill after the first epoch: no earlier pair
    fresh = resume.Backup(backup_dir)
    assert not fresh.has_state()
    assert fresh.restore(_tiny_model()) == 0
