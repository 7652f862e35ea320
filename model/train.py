"""`open-sandwiches train`: the article's classifier from a built dataset, in runs that
survive a kill.

    open-sandwiches train --dataset_dir out/hamburger_sandwich/1.0.0 --model_dir out/model
    open-sandwiches train ... --arch mobilenet_v2 --weights imagenet --fine_tune_layers 20

Rerun the same command after a kill and it resumes from the last finished epoch ("resuming
from epoch N" in the log); rerun it after the run finished and it says so and trains
nothing; another config in the same folder is refused unless --overwrite. Writes to
--model_dir: model.keras (the best epoch's weights), best.weights.h5, history.json,
training_log.csv, logs/ (TensorBoard), train.log, training_curves.png, config.json,
labels.json and progress.json (see model/resume.py). Seeded end to end: on CPU the same
seed gives the same history, resumed or not.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import time

import keras
import numpy as np
import pyarrow.parquet as pq
import tensorflow as tf

from model import data, network, plots, resume
from model.config import TrainConfig, from_namespace

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Phase:
    """One `fit`: its name, Adam's rate, its most epochs, and the base's trainable top
    layers (None: not a fine-tuning run, everything trains; 0: the base is frozen)."""

    name: str
    learning_rate: float
    epochs: int
    base_layers: int | None


def phases(config: TrainConfig) -> list[Phase]:
    """One phase, or, with --fine_tune_layers, the head on a frozen base then fine-tuning."""
    if not config.fine_tune_layers:
        return [Phase("train", config.learning_rate, config.epochs, None)]
    return [Phase("head", config.learning_rate, config.epochs, 0),
            Phase("fine_tune", config.fine_tune_learning_rate,
                  config.fine_tune_epochs or config.epochs, config.fine_tune_layers)]


def balanced_class_weight(dataset_dir: str, num_classes: int) -> dict[int, float]:
    """n / (k * n_c) per class over the training split, from the dataset's manifest."""
    manifest = pq.read_table(os.path.join(dataset_dir, "manifest.parquet"),
                             columns=["split", "label_index"]).to_pandas()
    counts = manifest[manifest.split == "train"].label_index.value_counts()
    n = int(counts.sum())
    return {c: (n / (num_classes * int(counts[c]))) if c in counts else 1.0
            for c in range(num_classes)}


def _model(config: TrainConfig, size: int, num_classes: int, phase: Phase, weights: str,
           start_from: str = "", compile: bool = True) -> keras.Model:
    """The phase's model, compiled for it; `start_from`: weights to load first (the best so
    far; before compile, since the phase has its own optimizer)."""
    model = network.make_model((size, size, 3), num_classes, config.arch, weights,
                               config.augment, config.dropout, config.seed,
                               frozen_base=phase.base_layers is not None)
    if phase.base_layers:
        opened = network.unfreeze_top(model, phase.base_layers)
        log.info("fine-tuning %d of the base's top %d layers (BatchNorm stays frozen): %s",
                 len(opened), phase.base_layers, ", ".join(opened))
    if start_from:
        model.load_weights(start_from)
    if compile:
        model.compile(optimizer=keras.optimizers.Adam(phase.learning_rate),
                      loss=("binary_crossentropy" if num_classes == 2
                            else "sparse_categorical_crossentropy"),
                      metrics=["accuracy"])
    return model


@dataclasses.dataclass
class _Run:
    """What every phase of one run shares."""

    config: TrainConfig
    size: int
    num_classes: int
    monitor: str
    train_ds: tf.data.Dataset
    val_ds: tf.data.Dataset | None
    class_weight: dict[int, float] | None
    counter: tf.Variable  # the training data's epoch (EpochSeeds sets it)


def train(config: TrainConfig) -> dict:
    """Train (or resume, or find finished) the run in config.model_dir; return a summary."""
    config.validate()
    if not tf.io.gfile.exists(os.path.join(config.dataset_dir, "dataset_info.json")):
        raise FileNotFoundError(f"{config.dataset_dir} is not a dataset written by build "
                                f"(it has no dataset_info.json)")
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    info = data.DatasetInfo.load(config.dataset_dir)
    size = config.image_size or config.check_input_size(
        info.image_size, "the dataset's crop size", "; --image_size resizes the crops")
    if not info.split_sizes.get("train"):
        raise ValueError(f"{config.dataset_dir} has no training examples")
    out = config.model_dir
    progress = resume.prepare(out, config.identity(), config.overwrite)
    has_val = bool(info.split_sizes.get("validation"))
    monitor = "val_loss" if has_val else "loss"
    if progress.complete:
        return _summary(config, monitor, progress, seconds=0.0, resumed_from=None,
                        model=keras.models.load_model(os.path.join(out, resume.MODEL)),
                        already_complete=True)
    resume.write_json(os.path.join(out, "labels.json"),
                      {"labels": list(info.labels), "image_size": size})
    counter = data.epoch_counter()
    run = _Run(config, size, len(info.labels), monitor,
               data.make_dataset(config.dataset_dir, "train", size, config.batch_size, True,
                                 config.seed, config.cache, epoch=counter),
               data.make_dataset(config.dataset_dir, "validation", size, config.batch_size,
                                 False, config.seed, config.cache) if has_val else None,
               balanced_class_weight(config.dataset_dir, len(info.labels))
               if config.class_weight == "balanced" else None,
               counter)
    start_time, resumed_from, phase_start = time.perf_counter(), None, 0
    for index, phase in enumerate(phases(config)):
        if phase.name not in progress.phases_done:
            resumed = _run_phase(run, index, phase, phase_start)
            resumed_from = resumed_from or resumed
            done = resume.load_history(out, sys.maxsize).get("loss", [])
            progress.phases_done[phase.name] = len(done)
            progress.save(out)  # then its backup goes: a kill between the two redoes nothing
            shutil.rmtree(os.path.join(out, resume.BACKUP, phase.name), ignore_errors=True)
        phase_start = progress.phases_done[phase.name]
    seconds = time.perf_counter() - start_time
    model = _finish(run, progress)
    return _summary(config, monitor, progress, seconds, resumed_from, model, False)


def _run_phase(run: _Run, index: int, phase: Phase, phase_start: int) -> int | None:
    """One phase's `fit`, from its backup if it has one; returns the epoch it resumed
    from (None: it started afresh)."""
    config, out = run.config, run.config.model_dir
    backup = resume.Backup(os.path.join(out, resume.BACKUP, phase.name))
    best_path = os.path.join(out, resume.BEST)
    # The configured weights start the first phase; later ones start from the best so far.
    # A backup replaces both, so nothing is downloaded or loaded for nothing.
    model = _model(config, run.size, run.num_classes, phase,
                   config.weights if index == 0 and not backup.has_state() else "none",
                   start_from=best_path if index and os.path.exists(best_path) else "")
    start = max(backup.restore(model), phase_start)
    end = phase_start + phase.epochs
    history = resume.load_history(out, start)  # later epochs were not backed up: redone
    resume.write_json(os.path.join(out, resume.HISTORY), history)
    resume.trim_csv(os.path.join(out, resume.CSV_LOG), start)
    best, wait = resume.early_stopping_state(history.get(run.monitor, []), phase_start)
    resumed = start > phase_start
    if resumed:
        resume.note(out, f"resuming from epoch {start} ({phase.name}: weights and optimizer "
                         f"restored from {backup.backup_dir}); epoch {start + 1} is next")
    else:
        resume.note(out, f"phase {phase.name}: learning rate {phase.learning_rate:g}, "
                         f"epochs {start + 1} to {end} at most")
    if start >= end or (resumed and wait >= config.patience):
        return start if resumed else None  # killed after its last epoch's backup
    callbacks = [
        resume.EpochSeeds(config.seed, run.counter),
        resume.best_checkpoint(out, run.monitor, best),
        resume.ResumedEarlyStopping(run.monitor, config.patience, best, wait),
        keras.callbacks.CSVLogger(os.path.join(out, resume.CSV_LOG), append=True),
        keras.callbacks.TensorBoard(os.path.join(out, resume.TENSORBOARD)),
        resume.EpochLog(out, history, end),
        backup]  # last: an epoch is done once its backup is
    model.fit(run.train_ds, validation_data=run.val_ds, epochs=end, initial_epoch=start,
              class_weight=run.class_weight, callbacks=callbacks, verbose=0,
              shuffle=False)  # make_dataset shuffles, seeded by epoch
    return start if resumed else None


def _finish(run: _Run, progress: resume.Progress) -> keras.Model:
    """The best epoch's weights as model.keras (in the last phase's form, not compiled: it
    serves), the curves, and last, completion; redone whole if a kill interrupts it."""
    out = run.config.model_dir
    best_path = os.path.join(out, resume.BEST)
    model = _model(run.config, run.size, run.num_classes, phases(run.config)[-1], "none",
                   start_from=best_path if os.path.exists(best_path) else "", compile=False)
    partial = os.path.join(out, ".model.partial.keras")
    model.save(partial)
    os.replace(partial, os.path.join(out, resume.MODEL))
    plots.training_curves(resume.load_history(out, sys.maxsize),
                          os.path.join(out, "training_curves.png"))
    progress.complete = True
    progress.save(out)
    shutil.rmtree(os.path.join(out, resume.BACKUP), ignore_errors=True)
    return model


def _summary(config: TrainConfig, monitor: str, progress: resume.Progress, seconds: float,
             resumed_from: int | None, model, already_complete: bool) -> dict:
    hist = resume.load_history(config.model_dir, sys.maxsize)
    best = int(np.argmin(hist[monitor])) if hist.get(monitor) else len(hist["loss"]) - 1
    starts = [0] + list(progress.phases_done.values())
    return {"epochs_run": len(hist["loss"]), "best_epoch": best + 1, "seconds": round(seconds, 1),
            "best": {k: v[best] for k, v in hist.items()}, "model_dir": config.model_dir,
            "model": model, "resumed_from": resumed_from, "already_complete": already_complete,
            "phases": {name: (start, end) for (name, end), start
                       in zip(progress.phases_done.items(), starts)}}


def command(args) -> int:
    """`open-sandwiches train` with parsed flags."""
    summary = train(from_namespace(args))
    best = ", ".join(f"{k} {v:.3f}" for k, v in summary["best"].items())
    if summary["already_complete"]:
        print(f"already trained: {summary['model_dir']} holds a finished run of this config "
              f"({summary['epochs_run']} epochs; best epoch {summary['best_epoch']}: {best}); "
              f"nothing to do. Pass --overwrite to train again.")
        return 0
    resumed = (f" (resumed after epoch {summary['resumed_from']})"
               if summary["resumed_from"] else "")
    print(f"trained {summary['epochs_run']} epochs in {summary['seconds']} s{resumed}; best "
          f"epoch {summary['best_epoch']}: {best}\nsaved to {summary['model_dir']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("train", argv)


if __name__ == "__main__":
    sys.exit(main())
