"""The Python API: plan, build, train and evaluate from keyword arguments or configs.

    from pipelines import api
    from pipelines.crop import CropSpec

    summary = api.plan(classes=["Hamburger", "Sandwich"], bbox_csv="boxes.csv",
                       images_csv="images.csv", output_dir="out/plan", max_per_class=500)
    report = api.build(classes=["Hamburger", "Sandwich"], bbox_csv="boxes.csv",
                       images_csv="images.csv", output_dir="out", crop=CropSpec(image_size=160))
    result = api.train(dataset_dir=report["dataset_dir"], model_dir="out/model")

Keyword arguments are the command's flags, named and valued as in --config files and in
build_report.json's `config` (lists for several values, True/False for switches); a config
dataclass stands for its group's flags (`crop=CropSpec(...)`, `fetch=FetchConfig(...)`, a
whole `options.BuildSettings` as the first argument), and Beam's flags are keywords too
(`runner="DataflowRunner", project=...`). Every call goes through the command's own parser,
so it checks what the command line checks (an unknown or misspelt name is a UsageError
naming the closest), and returns what `--json` prints: plan's summary, build's report
(check `report["invariant"]["lost"]` and `["examples"]`, which decide the command's exit
code), train's summary (with the Keras model under "model"), evaluate's metrics.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from pipelines import cli, flags, options
from pipelines.flags import UsageError


def _argv(command: str, groups: dict[str, flags.Group], base, kwargs: dict[str, Any]) -> list[str]:
    """The command line that the arguments stand for (the keywords win over `base`)."""
    values: dict[str, Any] = {}
    for value in ([base] if base is not None else []):
        values.update(_config_values(command, groups, value))
    for key, value in kwargs.items():
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            values.update(_config_values(command, groups, value))
        else:
            values[key] = value
    return flags.to_argv(values)


def _config_values(command: str, groups: dict[str, flags.Group], config) -> dict[str, Any]:
    """The flag values of a group's config, or of settings holding several."""
    if isinstance(config, options.PlanSettings):
        out: dict[str, Any] = {}
        for attr, group in groups.items():
            if hasattr(config, attr):
                out.update(_group_values(group, getattr(config, attr)))
        return out
    for group in groups.values():
        if isinstance(config, group.config):
            return _group_values(group, config)
    raise UsageError(f"{command} takes no {type(config).__name__}")


def _group_values(group: flags.Group, config) -> dict[str, Any]:
    """A config's flag values; refuses settings that no flag carries."""
    default = group.config()
    lost = [h for h in group.hidden if getattr(config, h) != getattr(default, h)]
    if lost:
        raise UsageError(f"{type(config).__name__}.{lost[0]} is not a setting of the tool "
                         f"(it keeps its default, {getattr(default, lost[0])!r})")
    return group.values(config)


def plan(settings: options.PlanSettings | None = None, **kwargs) -> dict:
    """Plan, as `open-sandwiches plan --json`; returns {"output_dir", **summary}."""
    from pipelines import plan as planner
    opts, config, output_dir = planner.prepare(_argv("plan", options.PLAN_GROUPS, settings,
                                                      kwargs))
    return {"output_dir": output_dir, **planner.execute(opts, config, output_dir)}


def build(settings: options.BuildSettings | None = None, *, progress_bars: bool = False,
          **kwargs) -> dict:
    """Build, as `open-sandwiches build --json`; returns {"dataset_dir", **report}.

    Args:
      progress_bars: draw tqdm bars on stderr (the local runner in memory only).
    """
    from pipelines import build as builder
    opts, config = builder.prepare(_argv("build", options.BUILD_GROUPS, settings, kwargs))
    return {"dataset_dir": config.layout.dir,
            **builder.execute(opts, config, bars=progress_bars)}


def train(config=None, **kwargs) -> dict:
    """Train (or resume, or find finished) a run, as `open-sandwiches train`; `config` is
    a model.config.TrainConfig, keywords are its fields. Returns the run's summary."""
    from model import config as train_config
    from model import train as trainer
    values = train_config.GROUP.values(config) if config is not None else {}
    values.update(kwargs)
    return trainer.train(train_config.from_namespace(cli.parse("train", flags.to_argv(values))))


def evaluate(model_dir: str, dataset_dir: str = "") -> dict:
    """Metrics of a trained model on validation and test, as `evaluate --json`."""
    from model import evaluate as evaluator
    return evaluator.evaluate(model_dir, dataset_dir)
