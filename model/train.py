"""`open-sandwiches train`: a Keras classifier from a built dataset.

    open-sandwiches train --dataset_dir out/hamburger_sandwich/1.0.0 --model_dir out/model

Writes to --model_dir: model.keras, history.json, training_curves.png, config.json,
labels.json and train.log (one line per epoch). Seeded end to end.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

import keras
import numpy as np
import pyarrow.parquet as pq

from model import data, network, plots
from model.config import TrainConfig, from_args

log = logging.getLogger(__name__)


class ProgressLog(keras.callbacks.Callback):
    """One line per epoch, to the log and to train.log, so long runs show where they are."""

    def __init__(self, path: str, epochs: int):
        super().__init__()
        self._path, self._epochs = path, epochs

    def on_train_begin(self, logs=None):
        self._file = open(self._path, "w")

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        values = ", ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()))
        line = f"epoch {epoch + 1}/{self._epochs}: {values} ({time.perf_counter() - self._start:.1f} s)"
        log.info("%s", line)
        self._file.write(line + "\n")
        self._file.flush()

    def on_train_end(self, logs=None):
        self._file.close()


def balanced_class_weight(dataset_dir: str, num_classes: int) -> dict[int, float]:
    """n / (k * n_c) per class over the training split, from the dataset's manifest."""
    manifest = pq.read_table(os.path.join(dataset_dir, "manifest.parquet"),
                             columns=["split", "label_index"]).to_pandas()
    counts = manifest[manifest.split == "train"].label_index.value_counts()
    n = int(counts.sum())
    return {c: (n / (num_classes * int(counts[c]))) if c in counts else 1.0
            for c in range(num_classes)}


def train(config: TrainConfig) -> dict:
    """Train, save everything to config.model_dir, and return a summary."""
    config.validate()
    keras.utils.set_random_seed(config.seed)
    info = data.DatasetInfo.load(config.dataset_dir)
    size = config.image_size or info.image_size
    num_classes = len(info.labels)
    if not info.split_sizes.get("train"):
        raise ValueError(f"{config.dataset_dir} has no training examples")
    train_ds = data.make_dataset(config.dataset_dir, "train", size, config.batch_size, True,
                                 config.seed, config.cache)
    has_val = bool(info.split_sizes.get("validation"))
    val_ds = (data.make_dataset(config.dataset_dir, "validation", size, config.batch_size,
                                False, config.seed, config.cache) if has_val else None)
    model = network.make_model((size, size, 3), num_classes, config.arch, config.weights,
                               config.augment, config.dropout, config.seed)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                  loss=("binary_crossentropy" if num_classes == 2
                        else "sparse_categorical_crossentropy"),
                  metrics=["accuracy"])
    os.makedirs(config.model_dir, exist_ok=True)
    monitor = "val_loss" if has_val else "loss"
    callbacks = [keras.callbacks.EarlyStopping(monitor=monitor, patience=config.patience,
                                               restore_best_weights=True),
                 ProgressLog(os.path.join(config.model_dir, "train.log"), config.epochs)]
    class_weight = (balanced_class_weight(config.dataset_dir, num_classes)
                    if config.class_weight == "balanced" else None)
    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs,
                        class_weight=class_weight, callbacks=callbacks, verbose=0,
                        shuffle=False)  # make_dataset shuffles, seeded
    seconds = time.perf_counter() - start
    model.save(os.path.join(config.model_dir, "model.keras"))
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    with open(os.path.join(config.model_dir, "history.json"), "w") as f:
        json.dump(hist, f, indent=2)
    with open(os.path.join(config.model_dir, "config.json"), "w") as f:
        f.write(config.to_json())
    with open(os.path.join(config.model_dir, "labels.json"), "w") as f:
        json.dump({"labels": list(info.labels), "image_size": size}, f, indent=2)
    plots.training_curves(hist, os.path.join(config.model_dir, "training_curves.png"))
    best = int(np.argmin(hist[monitor])) if hist.get(monitor) else len(hist["loss"]) - 1
    return {"epochs_run": len(hist["loss"]), "best_epoch": best + 1, "seconds": round(seconds, 1),
            "best": {k: v[best] for k, v in hist.items()}, "model_dir": config.model_dir,
            "model": model}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING if "--quiet" in argv else logging.INFO,
                        format="%(asctime)s %(message)s")
    argv = [a for a in argv if a not in ("--quiet", "--verbose")]
    logging.getLogger("absl").setLevel(logging.WARNING)  # tfds reports every file it opens
    try:
        config = from_args(argv)
        summary = train(config)
    except (ValueError, FileNotFoundError, network.OfflineWeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    best = ", ".join(f"{k} {v:.3f}" for k, v in summary["best"].items())
    print(f"trained {summary['epochs_run']} epochs in {summary['seconds']} s; best epoch "
          f"{summary['best_epoch']}: {best}\nsaved to {summary['model_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
