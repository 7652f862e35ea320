"""Fine-tuning: the head on a frozen base, then the base's top layers at a low rate; both
phases resumable (the run here is killed in its second phase and resumed)."""
import csv
import glob
import json
import os

import keras
import numpy as np
import pytest

from model import data, network, train
from tests.model.runs import history, resumed_epoch, start_killed_run

OPEN = 12  # the base's top layers that fine-tuning opens
SIZE = 32


@pytest.fixture(scope="module")
def pretrained(dataset, tmp_path_factory) -> str:
    """A MobileNetV2 weights file made offline, standing in for ImageNet's: random
    filters, with every BatchNorm's statistics set to those of our training crops.
    (Random weights as they come, with BatchNorm in inference mode, shrink the features
    to ~1e-13 and nothing learns; pretrained weights carry the statistics of their data.)"""
    keras.utils.set_random_seed(0)
    model = network.make_model((SIZE, SIZE, 3), 2, "mobilenet_v2", "none", augment=False)
    for layer in network.base_of(model).layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # one pass in training mode sets the statistics
    images = np.concatenate([x for x, _ in data.make_dataset(dataset, "train", SIZE, 64, False)])
    model(images, training=True)
    path = str(tmp_path_factory.mktemp("pretrained") / "mobilenet_v2.weights.h5")
    model.save_weights(path)
    return path


def flags(dataset: str, model_dir: str, weights: str, *extra: str) -> list[str]:
    return ["--dataset_dir", dataset, "--model_dir", model_dir, "--arch", "mobilenet_v2",
            "--weights", weights, "--image_size", str(SIZE), "--augment", "false",
            "--epochs", "2", "--patience", "2", "--fine_tune_layers", str(OPEN),
            "--fine_tune_epochs", "2", "--batch_size", "32", "--seed", "5", *extra]


@pytest.fixture(scope="module")
def fine_tuned(dataset, pretrained, tmp_path_factory):
    """A fine-tuning run killed after its first fine-tuning epoch, then resumed."""
    model_dir = str(tmp_path_factory.mktemp("fine_tuned"))
    metadata = os.path.join(model_dir, "backup", "fine_tune", "training_metadata.json")
    start_killed_run(flags(dataset, model_dir, pretrained), metadata, model_dir + ".out")
    assert train.main(flags(dataset, model_dir, pretrained, "--quiet")) == 0
    return model_dir


def _learning_rates(model_dir: str) -> list[float]:
    import tensorflow as tf
    rates = {}
    for path in glob.glob(os.path.join(model_dir, "logs", "train", "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "epoch_learning_rate":
                    rates[event.step] = float(tf.make_ndarray(value.tensor))
    return [rates[step] for step in sorted(rates)]


def test_both_phases_run_with_their_own_rates_and_epochs(fine_tuned):
    progress = json.load(open(os.path.join(fine_tuned, "progress.json")))
    assert progress == {"phases_done": {"head": 2, "fine_tune": 4}, "complete": True}
    val_loss = history(fine_tuned)["val_loss"]
    assert len(val_loss) == 4 and min(val_loss[2:]) < min(val_loss[:2])  # fine-tuning helped
    np.testing.assert_allclose(_learning_rates(fine_tuned), [1e-3, 1e-3, 1e-5, 1e-5], rtol=1e-6)
    log = open(os.path.join(fine_tuned, "train.log")).read()
    assert "phase head: learning rate 0.001, epochs 1 to 2 at most" in log
    assert "phase fine_tune: learning rate 1e-05, epochs 3 to 4 at most" in log


def test_only_the_top_of_the_base_trains_and_batchnorm_stays_frozen(fine_tuned, pretrained):
    model = keras.models.load_model(os.path.join(fine_tuned, "model.keras"))
    base = network.base_of(model)
    trainable = [layer.name for layer in base.layers if layer.trainable and layer.weights]
    assert trainable == [layer.name for layer in base.layers[-OPEN:] if layer.weights
                         and not isinstance(layer, keras.layers.BatchNormalization)]
    assert not any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
                   for layer in base.layers)
    # The best epoch is a fine-tuning one: the opened layers moved from the pretrained
    # weights; the layers below them and every BatchNorm statistic never did.
    start = network.make_model((SIZE, SIZE, 3), 2, "mobilenet_v2", pretrained, augment=False)
    for trained_layer, initial in zip(base.layers, network.base_of(start).layers):
        same = all(np.array_equal(a, b) for a, b in zip(trained_layer.get_weights(),
                                                        initial.get_weights()))
        assert same == (trained_layer.name not in trainable), trained_layer.name


def test_the_fine_tuning_phase_resumes_after_a_kill(fine_tuned):
    assert resumed_epoch(fine_tuned) == 3  # after the first fine-tuning epoch
    with open(os.path.join(fine_tuned, "training_log.csv")) as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [0, 1, 2, 3]
    assert not os.path.exists(os.path.join(fine_tuned, "backup"))
