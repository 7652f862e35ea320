"""What every command shares: its parser's shape, its output settings, its errors.

Each command's parser (`Parser`) is named `open-sandwiches COMMAND`, opens with a
description, ends with an example, shows every default, and raises `UsageError` where
argparse would print its usage and exit. `run()` turns a mistake of the user's (a missing
file, a bad value, an unknown flag) into one `error: ...` line on stderr and exit code 2,
any other exception into one line and exit code 1, and shows the traceback only with
`--verbose`. `--quiet` keeps the log to warnings.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from typing import Callable

from pipelines import tfquiet
from pipelines.flags import UsageError, wrap

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log every file they open at INFO; their lines come back with --verbose.
_CHATTY = ("apache_beam", "absl", "tensorflow", "h5py", "matplotlib", "PIL", "urllib3")


class Parser(argparse.ArgumentParser):
    """argparse for one command: errors raise UsageError; `flags` lists its flags."""

    def __init__(self, name: str, description: str, example: str, usage: str = ""):
        self.flags: list[str] = []
        self.single: set[str] = set()  # flags that take exactly one value
        super().__init__(prog=f"open-sandwiches {name}", description=wrap(description),
                         usage=f"%(prog)s {usage or '[flags]'}",
                         epilog="example:\n" + "\n".join(f"  {line}" for line in
                                                         example.strip().splitlines()),
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         allow_abbrev=False)

    def add_argument(self, *args, **kwargs):
        return self.record(super().add_argument(*args, **kwargs))

    def record(self, action: argparse.Action) -> argparse.Action:
        """Note a flag (also one added through a group) in `flags` and `single`."""
        self.flags += action.option_strings
        if isinstance(action, argparse._StoreAction) and action.nargs is None:
            self.single.update(action.option_strings)
        return action

    def add_argument_group(self, *args, **kwargs):
        return _Group(self, super().add_argument_group(*args, **kwargs))

    def error(self, message: str):
        raise UsageError(f"{message} (open-sandwiches {self.prog.split()[-1]} --help "
                         f"lists the flags)")

    def output_flags(self, json_flag: bool = False) -> None:
        """--json (where the command has a JSON form), --verbose, --quiet."""
        g = self.add_argument_group("output")
        if json_flag:
            g.add_argument("--json", action="store_true",
                           help="print one JSON document on stdout (everything else goes "
                                "to stderr)")
        g.add_argument("--verbose", action="store_true",
                       help="debug logging, TensorFlow's and Beam's own lines, and the "
                            "traceback of an error")
        g.add_argument("--quiet", action="store_true", help="log warnings and errors only")


class _Group:
    """An argument group that records its flags in its parser's `flags`."""

    def __init__(self, parser: Parser, group):
        self._parser, self._group = parser, group

    def add_argument(self, *args, **kwargs):
        return self._parser.record(self._group.add_argument(*args, **kwargs))

    def __getattr__(self, name):
        return getattr(self._group, name)


def setup_output(verbose: bool = False, quiet: bool = False) -> None:
    """Logging on stderr (INFO; DEBUG with --verbose; WARNING with --quiet) and, with
    --verbose, TensorFlow's own lines."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format=LOG_FORMAT)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        tfquiet.enabled = False
        if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3" and "tensorflow" not in sys.modules:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean the input is wrong, not the tool: exit 2, one line. Every
    check of ours raises a ValueError (UsageError, UnknownClassError, TableFormatError,
    a config's refusal) or an OSError (a missing or unreadable file)."""
    errors: tuple = (ValueError, OSError)
    if "model.network" in sys.modules:  # --weights imagenet offline
        errors += (sys.modules["model.network"].OfflineWeightsError,)
    return errors


def message(err: BaseException) -> str:
    """An exception as one line: 'No such file or directory: /x' for OS errors."""
    if isinstance(err, OSError) and err.strerror and err.filename:
        text = f"{err.strerror}: {err.filename}"
    elif isinstance(err, KeyError):
        text = f"missing {err}"
    else:
        text = str(err) or type(err).__name__
    return "; ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def run(body: Callable[[], int | None], verbose: bool) -> int:
    """Call a command's body; map its exceptions to one error line and an exit code."""
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the boundary between the tool and its user
        if verbose:
            traceback.print_exc()
        if isinstance(err, user_errors()):
            print(f"error: {message(err)}", file=sys.stderr)
            return 2
        print(f"error: {type(err).__name__}: {message(err)}"
              + ("" if verbose else " (rerun with --verbose for the traceback)"),
              file=sys.stderr)
        return 1
