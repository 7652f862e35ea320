"""The model folder as a resumable run: what is finished, and the callbacks that keep it so.

A run is one phase ("train"), or two with --fine_tune_layers ("head", then "fine_tune").
Each phase is one `fit`; Keras' BackupAndRestore saves its state (weights, optimizer,
epoch) under backup/<phase>/ at every epoch's end, and a rerun of the same command
restores it before `fit` and continues with the next epoch. What else must survive a kill
is written at each epoch's end in this order, so a kill between two steps only makes the
rerun redo that epoch (which, seeded, gives the same numbers again):

  1. ModelCheckpoint of the best epoch so far, to a temporary name (a kill mid-write
     cannot spoil best.weights.h5), CSVLogger (training_log.csv), TensorBoard (logs/);
  2. best.weights.h5 published, history.json replaced whole, a line in train.log;
  3. the backup.

On resume, history.json and training_log.csv are cut back to the epochs the backup holds,
and early stopping and the checkpoint's threshold are rebuilt from the history, so every
epoch is counted once. progress.json records finished phases and, last, completion.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time

import keras
import numpy as np

log = logging.getLogger(__name__)

CONFIG, PROGRESS, HISTORY, LOG = "config.json", "progress.json", "history.json", "train.log"
BEST, CSV_LOG, TENSORBOARD, BACKUP = "best.weights.h5", "training_log.csv", "logs", "backup"
MODEL = "model.keras"
_BEST_PARTIAL = ".best.partial.weights.h5"
# Everything train and evaluate write into a model folder: what --overwrite removes.
OUTPUTS = (CONFIG, PROGRESS, HISTORY, LOG, BEST, CSV_LOG, TENSORBOARD, BACKUP, MODEL,
           _BEST_PARTIAL, "labels.json", "training_curves.png", "metrics.json",
           "confusion_matrix.png", "mistakes.png")


def write_json(path: str, value) -> None:
    """Replace a JSON file whole (write aside, rename), so a kill never leaves half of it."""
    with open(path + ".partial", "w") as f:
        json.dump(value, f, indent=2)
    os.replace(path + ".partial", path)


@dataclasses.dataclass
class Progress:
    """progress.json: epochs finished at the end of each finished phase, and completion."""

    phases_done: dict[str, int] = dataclasses.field(default_factory=dict)
    complete: bool = False

    @classmethod
    def load(cls, model_dir: str) -> "Progress | None":
        path = os.path.join(model_dir, PROGRESS)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return cls(**json.load(f))

    def save(self, model_dir: str) -> None:
        write_json(os.path.join(model_dir, PROGRESS), dataclasses.asdict(self))


def clear(model_dir: str) -> None:
    """Remove what train and evaluate wrote (and partial files a kill left); nothing else."""
    for name in os.listdir(model_dir):
        path = os.path.join(model_dir, name)
        if name not in OUTPUTS and ".partial" not in name:
            continue
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def prepare(model_dir: str, identity: dict, overwrite: bool) -> Progress:
    """Decide what a run in model_dir does, before anything is trained: start afresh,
    resume the unfinished run of the same config, or report the finished one (returned
    with complete=True). Refuses another run's folder unless `overwrite`."""
    if overwrite and os.path.isdir(model_dir):
        clear(model_dir)
    config_path = os.path.join(model_dir, CONFIG)
    if not os.path.exists(config_path):
        found = [name for name in OUTPUTS
                 if name != PROGRESS and os.path.exists(os.path.join(model_dir, name))]
        if found:
            raise ValueError(f"{model_dir} holds {', '.join(found)} but no {CONFIG}: not a "
                             f"run this trainer can resume; pass --overwrite to replace it, or "
                             f"choose another --model_dir")
        os.makedirs(model_dir, exist_ok=True)
        progress = Progress()
        progress.save(model_dir)  # before config.json: config.json marks a run
        write_json(config_path, identity)
        return progress
    progress = Progress.load(model_dir)
    if progress is None:
        raise ValueError(f"{model_dir} holds a model trained by an older version (no "
                         f"{PROGRESS}); pass --overwrite to train again, or choose another "
                         f"--model_dir")
    with open(config_path) as f:
        saved = json.load(f)
    changed = [f"{k} {saved.get(k)!r} -> {identity.get(k)!r}"
               for k in sorted(set(saved) | set(identity)) if saved.get(k) != identity.get(k)]
    if changed:
        state = "a finished" if progress.complete else "an unfinished"
        raise ValueError(f"{model_dir} holds {state} run of another config "
                         f"({'; '.join(changed)}); pass --overwrite to replace it, or choose "
                         f"another --model_dir")
    return progress


def load_history(model_dir: str, epochs: int) -> dict[str, list[float]]:
    """The history of the first `epochs` epochs (later ones were not backed up: redone)."""
    path = os.path.join(model_dir, HISTORY)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return {k: v[:epochs] for k, v in json.load(f).items()}


def trim_csv(path: str, epochs: int) -> None:
    """Keep training_log.csv's header and its rows of the first `epochs` epochs."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    kept = rows[:1] + [r for r in rows[1:] if r and int(r[0]) < epochs]
    with open(path + ".partial", "w", newline="") as f:
        csv.writer(f).writerows(kept)
    os.replace(path + ".partial", path)


def early_stopping_state(values: list[float], phase_start: int) -> tuple[float | None, int]:
    """(best value so far, epochs without improvement in this phase): the state
    EarlyStopping had after these epochs, had it run since the phase started with the
    best of the earlier phases as the value to beat."""
    if not values:
        return None, 0
    best = int(np.argmin(values))  # the first of equal values: later ties do not improve
    return float(values[best]), len(values) - max(best + 1, phase_start)


def _backed_up_epoch(path: str) -> int | None:
    """The finished epoch a BackupAndRestore metadata file records; None if it is missing
    or unreadable."""
    try:
        with open(path) as f:
            return int(json.load(f)["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Backup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore that restores before `fit`, so the run knows where it resumes (to
    cut the history back and rebuild early stopping), and keeps its files after `fit`:
    the trainer removes them once progress.json says the phase is done."""

    def __init__(self, backup_dir: str):
        super().__init__(backup_dir, double_checkpoint=True, delete_checkpoint=False)
        self._restored = False

    def has_state(self) -> bool:
        """Whether a finished epoch was backed up and can be read back (the metadata is
        written after the weights; a kill while it was rewritten leaves the previous one)."""
        return (_backed_up_epoch(self._training_metadata_path) is not None
                or _backed_up_epoch(self._prev_training_metadata_path) is not None)

    def restore(self, model: keras.Model) -> int:
        """Load the last backup into the compiled model -> epochs it had finished (0: none)."""
        self.set_model(model)
        self._restored = True
        if not self.has_state():  # no backup, or a kill before its first metadata
            return 0
        if _backed_up_epoch(self._training_metadata_path) is None:
            # Keras rewrites the metadata in place (truncate, then write): a kill between
            # the two leaves it empty. Fall back one epoch, as Keras does for spoiled weights.
            shutil.copy(self._prev_weights_path, self._weights_path)
            shutil.copy(self._prev_training_metadata_path, self._training_metadata_path)
        super().on_train_begin()  # weights and optimizer; a spoiled file falls back one epoch
        return _backed_up_epoch(self._training_metadata_path) or 0

    def on_train_begin(self, logs=None):
        if not self._restored:
            super().on_train_begin(logs)


class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that starts from the state rebuilt from the history."""

    def __init__(self, monitor: str, patience: int, best: float | None, wait: int):
        super().__init__(monitor=monitor, patience=patience)
        self._resumed = (best, wait)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best, self.wait = self._resumed


def best_checkpoint(model_dir: str, monitor: str,
                    best: float | None) -> keras.callbacks.ModelCheckpoint:
    """ModelCheckpoint of the best weights (to a temporary name that EpochLog publishes)."""
    return keras.callbacks.ModelCheckpoint(
        os.path.join(model_dir, _BEST_PARTIAL), monitor=monitor, save_best_only=True,
        save_weights_only=True, initial_value_threshold=best)


def _seed_for(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}/{index}".encode()).digest()[:4], "big") >> 1


class EpochSeeds(keras.callbacks.Callback):
    """Make each epoch's randomness a function of (seed, epoch) alone: at its start, set the
    data's epoch counter (shuffle order) and every seed generator of the model
    (augmentation, dropout; their state is not in the backup), so a resumed run replays
    exactly the epochs an uninterrupted one would."""

    def __init__(self, seed: int, counter):
        super().__init__()
        self._seed, self._counter = seed, counter

    def on_epoch_begin(self, epoch, logs=None):
        self._counter.assign(epoch)
        states = [v for v in self.model.variables if v.path.endswith("seed_generator_state")]
        for i, state in enumerate(states):
            # [seed, counter]: each epoch starts its own counter range, 2**20 draws apart.
            value = [_seed_for(self._seed, i), (epoch << 20) % (1 << 31)]
            state.assign(keras.ops.convert_to_tensor(value, dtype=state.dtype))


class EpochLog(keras.callbacks.Callback):
    """At each epoch's end: publish the best checkpoint, replace history.json, and write a
    line to train.log and the log, so long runs show where they are."""

    def __init__(self, model_dir: str, history: dict[str, list[float]], last_epoch: int):
        super().__init__()
        self._dir, self.history, self._last = model_dir, history, last_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        partial = os.path.join(self._dir, _BEST_PARTIAL)
        if os.path.exists(partial):  # left by a kill: not this epoch's
            os.remove(partial)

    def on_epoch_end(self, epoch, logs=None):
        partial = os.path.join(self._dir, _BEST_PARTIAL)
        if os.path.exists(partial):
            os.replace(partial, os.path.join(self._dir, BEST))
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        write_json(os.path.join(self._dir, HISTORY), self.history)
        values = ", ".join(f"{k}={v:.4f}" for k, v in sorted((logs or {}).items()))
        note(self._dir, f"epoch {epoch + 1}/{self._last}: {values} "
                        f"({time.perf_counter() - self._start:.1f} s)")


def note(model_dir: str, line: str) -> None:
    """A line to train.log (appended: a resumed run continues it) and to the log."""
    log.info("%s", line)
    with open(os.path.join(model_dir, LOG), "a") as f:
        f.write(line + "\n")
