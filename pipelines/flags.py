"""Flags from typed config dataclasses, and `--config` files: one way for every command.

A config dataclass (fetch.FetchConfig, crop.CropSpec, scan_rows.BoxFilters, the settings in
options.py, model.config.TrainConfig) is a `Group` of flags: one flag per field, named
like the field unless the group renames it (the one place where `--fetch_timeout_s`
becomes `read_timeout_s`), typed by its annotation, defaulting to its default, documented
by the group's `help` or the class docstring's Attributes section. The same names are the
keys of --config files (YAML or JSON), of build_report.json's `config` section and of the
Python API's keyword arguments, so a value travels unchanged between the three.

Beam-free and TensorFlow-free: `--help` of every command is built from this module.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import re
import typing
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence


class UsageError(ValueError):
    """A mistake in the command line, a config file or an API call: one line for the user."""


def parse_bool(text: str) -> bool:
    """`true/false`, `yes/no`, `1/0`: how a boolean flag takes an explicit value."""
    if str(text).lower() in ("1", "true", "yes"):
        return True
    if str(text).lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r} (true or false)")


def attribute_docs(cls: type) -> dict[str, str]:
    """A dataclass docstring's Attributes section as {field: text}; "a, b: text" documents
    both. The docstring stays the one description of each field."""
    out: dict[str, str] = {}
    names: list[str] = []
    inside = False
    for line in (inspect.getdoc(cls) or "").splitlines():
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break
        entry = re.match(r"^ {1,2}([\w, ]+):(?:\s+(.*))?$", line)
        if entry:
            names = [n.strip() for n in entry.group(1).split(",")]
            for n in names:
                out[n] = (entry.group(2) or "").strip()
        else:
            for n in names:
                out[n] = f"{out[n]} {line.strip()}".strip()
    return out


@dataclasses.dataclass(frozen=True)
class Flag:
    """One field of a config as a flag."""

    field: str
    name: str  # the flag without "--"
    kind: Any  # bool, int, float, str
    nargs: int | str | None
    default: Any
    help: str
    choices: tuple | None


@dataclasses.dataclass(frozen=True)
class Group:
    """A config dataclass as a group of flags under one heading.

    Attributes:
      title: the heading in --help.
      config: the dataclass.
      description: a line under the heading.
      flags: field -> flag name, where the flag is named otherwise (kept for users' scripts).
      help: field -> help text (else the docstring's Attributes entry).
      choices: field -> allowed values.
      hidden: fields that are not flags (they keep their defaults).
      metavars: field -> the value's name in --help (a tuple for a fixed count).
    """

    title: str
    config: type
    description: str = ""
    flags: Mapping[str, str] = dataclasses.field(default_factory=dict)
    help: Mapping[str, str] = dataclasses.field(default_factory=dict)
    choices: Mapping[str, Sequence] = dataclasses.field(default_factory=dict)
    hidden: tuple[str, ...] = ()
    metavars: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def specs(self) -> list[Flag]:
        hints = typing.get_type_hints(self.config)
        docs = attribute_docs(self.config)
        out = []
        for f in dataclasses.fields(self.config):
            if f.name in self.hidden or not f.init:
                continue
            kind, nargs = _kind(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            choices = self.choices.get(f.name)
            out.append(Flag(f.name, self.flags.get(f.name, f.name), kind, nargs, default,
                            self.help.get(f.name) or docs.get(f.name, ""),
                            tuple(choices) if choices else None))
        return out

    def names(self) -> list[str]:
        return [s.name for s in self.specs()]

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add the group's flags, under its heading, with their defaults shown."""
        group = parser.add_argument_group(self.title, wrap(self.description) or None)
        for s in self.specs():
            text = s.help.rstrip(".").replace("%", "%%") + default_text(s.default)
            if s.kind is bool:
                group.add_argument(f"--{s.name}", type=parse_bool, nargs="?", const=True,
                                   default=s.default, metavar="true|false", help=text)
                continue
            metavar = self.metavars.get(s.field)
            if metavar is None and s.choices and "" in s.choices:  # "" is the unset default
                metavar = "{" + ",".join(c for c in s.choices if c) + "}"
            group.add_argument(f"--{s.name}", type=s.kind, nargs=s.nargs, default=s.default,
                               choices=s.choices, metavar=metavar, help=text)

    def build(self, values: Mapping[str, Any]):
        """The config from flag values ({flag name: value}; missing ones take defaults).

        Raises:
          ValueError: the config refuses a value (its __post_init__ checks).
        """
        kwargs = {}
        for s in self.specs():
            if s.name in values:
                v = values[s.name]
                kwargs[s.field] = tuple(v) if s.nargs is not None and v is not None else v
        return self.config(**kwargs)

    def values(self, config) -> dict[str, Any]:
        """{flag name: value} of a config, JSON-ready (tuples as lists): its --config keys."""
        return {s.name: list(v) if isinstance(v := getattr(config, s.field), tuple) else v
                for s in self.specs()}


def _kind(hint) -> tuple[Any, int | str | None]:
    """(element type, nargs) of a field's annotation: tuple[str, ...] -> (str, "+"),
    tuple[float, float, float] -> (float, 3), str | None -> (str, None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (tuple, list):
        if len(args) == 2 and args[1] is Ellipsis or origin is list:
            return args[0], "+"
        return args[0], len(args)
    if args and type(None) in args:  # Optional[X], X | None
        return next(a for a in args if a is not type(None)), None
    return hint, None


def wrap(text: str, width: int = 88) -> str:
    """A paragraph wrapped for --help (whose formatter keeps descriptions as written, so
    that examples keep their lines)."""
    import textwrap
    return textwrap.fill(" ".join(text.split()), width) if text else ""


def default_text(default) -> str:
    """' (default: X)' for a help text, or '' where the default is empty."""
    if default in ("", None, ()) or default == []:
        return ""
    if isinstance(default, bool):
        return f" (default: {str(default).lower()})"
    if isinstance(default, (tuple, list)):
        return f" (default: {' '.join(str(v) for v in default)})"
    return f" (default: {default})"


def suggest(name: str, candidates: Iterable[str]) -> str:
    """'; did you mean --x?' for the closest candidate, or ''."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def snake_case(argv: Sequence[str], ours: Collection[str]) -> list[str]:
    """Kebab-case spellings of our flags as the flags (`--bbox-csv` is `--bbox_csv`).
    Other flags pass unchanged (Beam's own `--job-server-timeout` among them)."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[i:])
        if arg.startswith("--") and "-" in arg[2:].split("=", 1)[0]:
            name, eq, value = arg.partition("=")
            snake = "--" + name[2:].replace("-", "_")
            if snake in ours:
                arg = snake + eq + value
        out.append(arg)
    return out


def read_config(path: str) -> dict:
    """A --config file as {key: value}: YAML or JSON; a build_report.json gives the flags
    it records under `config`.

    Raises:
      UsageError: the file is not a mapping.
      OSError: it cannot be read.
    """
    import yaml  # JSON is YAML

    from pipelines import files
    try:
        data = yaml.safe_load(files.read_bytes(path)) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"{path}: not YAML or JSON: {str(err).splitlines()[0]}") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict) and "fingerprint" in data:
        data = data["config"]  # a build_report.json: rebuild from the flags it records
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a config file is a mapping of flag names to values")
    return data


def to_argv(values: Mapping[str, Any]) -> list[str]:
    """{key: value} as flags: lists become several values, booleans `--key true|false`,
    None and empty lists are left out (the flag keeps its default)."""
    argv: list[str] = []
    for key, value in values.items():
        flag = "--" + str(key).lstrip("-")
        if value is None or value == [] or value == ():
            continue
        if isinstance(value, bool):
            argv += [flag, str(value).lower()]
        elif isinstance(value, (list, tuple)):
            argv += [flag] + [str(v) for v in value]
        else:
            argv += [flag, str(value)]
    return argv


def config_argv(path: str, ours: Collection[str], others: Callable[[str], bool] | None = None,
                ignore: Collection[str] = (), single: Collection[str] = ()
                ) -> tuple[list[str], dict[str, Any]]:
    """A --config file's flags, checked: (our flags' argv, {key: value} of the keys that
    `others` accepts, e.g. Beam's). Keys in `ignore` (known to the tool, not to this
    command) and `config` itself are skipped; kebab-case keys are our snake-case flags.

    Raises:
      UsageError: a key that is not a flag of ours (with the closest), nor of `others`;
        a list for one of ours in `single` (flags that take one value), which argparse
        would only call an unexpected argument.
    """
    ours_argv, other_values, unknown = {}, {}, []
    for key, value in read_config(path).items():
        name = "--" + str(key).lstrip("-")
        snake = "--" + name[2:].replace("-", "_")
        if snake in ours:
            if snake in single and isinstance(value, (list, tuple)):
                raise UsageError(f"{path}: {key} takes one value, not a list ({value!r})")
            ours_argv[snake[2:]] = value
        elif snake[2:] in ("config",) or snake in ignore:
            continue
        elif others is not None and others(name):
            other_values[name[2:]] = value
        else:
            unknown.append(str(key))
    if unknown:
        raise UsageError(f"{path}: unknown keys {unknown}" + suggest(
            "--" + unknown[0].replace("-", "_"), ours).replace("--", "", 1))
    return to_argv(ours_argv), other_values


def expand_config(argv: Sequence[str]) -> tuple[str, list[str]]:
    """(the --config path or "", argv without it)."""
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1], argv[:i] + argv[i + 2:]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
    return "", argv
