"""The trainer's typed config: defaults as in the article, loadable from YAML or JSON.

    open-sandwiches train --dataset_dir out/hamburger_sandwich/1.0.0 --model_dir out/model
    open-sandwiches train --config train.yaml --epochs 10     # the command line wins
    open-sandwiches train ... --arch mobilenet_v2 --weights imagenet --fine_tune_layers 20
"""
from __future__ import annotations

import dataclasses
import json
import math

from pipelines import flags

ARCHS = ("simple_cnn", "mobilenet_v2", "efficientnet_b0")
TRANSFER_ARCHS = ARCHS[1:]
MAX_INPUT_SIZE = 4096  # build's largest --image_size
# Fields that say how to run, not what to train: not saved, not compared on a rerun.
RUN_OPTIONS = ("overwrite",)


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; saved beside the model as config.json.

    Attributes:
      dataset_dir: a dataset written by `build` (<output_dir>/<name>/<version>).
      model_dir: where model.keras, history.json, plots and logs go.
      arch: simple_cnn (the article's three conv blocks), mobilenet_v2 or efficientnet_b0.
      weights: for the transfer archs: imagenet (downloads; needs the internet), none, or
        a path to a .weights.h5 / .keras file of the same architecture.
      image_size: model input side; crops are resized to it (default: the dataset's).
      batch_size, epochs, patience: as in the article (16, up to 50, early stop after 4).
      learning_rate: Adam's.
      class_weight: none, or balanced (inverse class frequency in the training split).
      seed: seeds shuffling, augmentation and initialisation.
      augment: random flip, zoom, rotation, translation and contrast layers in the model.
      dropout: before the classifier.
      cache: keep decoded images in memory when they fit (auto), always (true), never (false).
      fine_tune_layers: for the transfer archs, 0 trains the whole network at once; N > 0
        first trains the head on a frozen base (BatchNorm in inference mode) until early
        stopping, then unfreezes the base's top N layers (BatchNorm layers stay frozen)
        and trains on: Chollet's "very little data" recipe.
      fine_tune_learning_rate: Adam's rate in the fine-tuning phase (low, so the
        pretrained features are adjusted, not destroyed).
      fine_tune_epochs: most epochs of the fine-tuning phase (0: as many as --epochs).
      overwrite: replace a model folder that holds another run (a different config, or a
        finished run). Without it, a rerun resumes an unfinished run of the same config
        and reports a finished one without training again.
    """

    dataset_dir: str = ""
    model_dir: str = "model_out"
    arch: str = "simple_cnn"
    weights: str = "none"
    image_size: int = 0
    batch_size: int = 16
    epochs: int = 50
    patience: int = 4
    learning_rate: float = 1e-3
    class_weight: str = "none"
    seed: int = 0
    augment: bool = True
    dropout: float = 0.5
    cache: str = "auto"
    fine_tune_layers: int = 0
    fine_tune_learning_rate: float = 1e-5
    fine_tune_epochs: int = 0
    overwrite: bool = False

    def validate(self) -> "TrainConfig":
        if not self.dataset_dir:
            raise ValueError("--dataset_dir is required (a folder written by build)")
        if self.arch not in ARCHS:
            raise ValueError(f"--arch must be one of {ARCHS}, not {self.arch!r}")
        if self.class_weight not in ("none", "balanced"):
            raise ValueError("--class_weight must be none or balanced")
        if self.cache not in ("auto", "true", "false"):
            raise ValueError("--cache must be auto, true or false")
        if self.batch_size < 1 or self.epochs < 1 or self.patience < 0:
            raise ValueError("--batch_size and --epochs must be >= 1, --patience >= 0")
        if self.fine_tune_layers < 0 or self.fine_tune_epochs < 0:
            raise ValueError("--fine_tune_layers and --fine_tune_epochs must be >= 0")
        if self.fine_tune_layers and self.arch not in TRANSFER_ARCHS:
            raise ValueError(f"--fine_tune_layers needs a pretrained base: --arch one of "
                             f"{TRANSFER_ARCHS}, not {self.arch!r}")
        for name in ("learning_rate", "fine_tune_learning_rate"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"--{name} must be a finite number > 0, not {value}")
        if not 0 <= self.dropout < 1:  # nan fails too
            raise ValueError(f"--dropout must be at least 0 and below 1, not {self.dropout}")
        if self.image_size:
            self.check_input_size(self.image_size)  # 0: the crops' own
        return self

    def check_input_size(self, size: int, what: str = "--image_size", hint: str = "") -> int:
        """The model's input side: at least what the network's poolings need (8 for
        simple_cnn's three, 32 for keras.applications backbones), at most the largest
        crop build writes. Raw Keras errors (or running out of memory) otherwise."""
        low = 32 if self.arch in TRANSFER_ARCHS else 8
        if not low <= size <= MAX_INPUT_SIZE:
            raise ValueError(f"{what} is {size}: outside {low}..{MAX_INPUT_SIZE} for --arch "
                             f"{self.arch}{hint}")
        return size

    def identity(self) -> dict:
        """What the trained model depends on: the fields a rerun must match to resume."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_OPTIONS}

    def to_json(self) -> str:
        """config.json: the identity, loadable again with --config."""
        return json.dumps(self.identity(), indent=2)


GROUP = flags.Group("training", TrainConfig, choices={
    "arch": ARCHS, "class_weight": ("none", "balanced"), "cache": ("auto", "true", "false")})


def add_flags(parser) -> None:
    """train's flags, one per TrainConfig field (help from its Attributes), and --config."""
    GROUP.add_to(parser)
    g = parser.add_argument_group("config")
    g.add_argument("--config", default="", metavar="FILE",
                   help="a YAML or JSON file of these flags (keys without --; a model "
                        "folder's config.json is one); the command line wins")


def from_namespace(args) -> TrainConfig:
    """The config from parsed flags (raises ValueError on a bad value)."""
    return GROUP.build(vars(args)).validate()


def from_args(argv: list[str]) -> TrainConfig:
    """Config from --config FILE (YAML/JSON) and flags named like the fields.

    Raises:
      ValueError: a bad or unknown flag, an unknown key in the file, a bad value.
    """
    from pipelines import cli
    return from_namespace(cli.parse("train", list(argv)))
