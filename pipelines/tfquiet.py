"""TensorFlow's start-up lines, kept off the terminal, in every process that imports us.

Loading TensorFlow's C++ libraries prints lines (oneDNN, "Could not find cuda drivers",
CPU instructions) before `TF_CPP_MIN_LOG_LEVEL` can apply: absl writes them straight to
file descriptor 2 while its logging is not yet initialised. Users saw them on every
command that touches TensorFlow, and a build printed them from the worker that writes its
metadata. `install()` (run by `import pipelines`, so Beam workers that unpickle our DoFns
get it too) puts a one-shot hook on the import of `tensorflow`: while the package loads,
descriptor 2 goes to a temporary file; then the lines shaped like absl's start-up logging
are dropped and everything else (another thread's warning, an import error) is written to
the real stderr. `--verbose` turns the hook off (`enabled = False`).
"""
from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import threading

enabled = True
_NOISE = re.compile(rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
                    rb"|[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]"
                    rb"|To enable the following instructions: )")


@contextlib.contextmanager
def filtered_stderr():
    """Descriptor 2 into a temporary file for the duration; then its lines, less absl's
    start-up logging, onto the real stderr."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no descriptor 2 to redirect
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().splitlines(keepends=True)
                    if not _NOISE.match(line)]
            if kept:
                os.write(2, b"".join(kept))


class _QuietLoader(importlib.abc.Loader):
    """The real loader of `tensorflow`, run with stderr filtered."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module) -> None:
        uninstall()  # one shot: every later import goes the usual way
        module.__loader__ = self._inner  # the package sees its own loader, as always
        if module.__spec__ is not None:
            module.__spec__.loader = self._inner
        with filtered_stderr():
            self._inner.exec_module(module)


class _Hook(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as the other finders do, with the quiet loader. It stays in place
    until the package is loaded, not only looked up: etils (under tfds) asks
    `importlib.util.find_spec('tensorflow')` without importing it, and a hook that left
    then let the real import print its lines."""

    def __init__(self):
        self._searching = threading.local()  # our own find_spec below comes back here

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow" or not enabled or getattr(self._searching, "on", False):
            return None
        self._searching.on = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._searching.on = False
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


_HOOK = _Hook()


def install() -> None:
    """Filter the first import of tensorflow in this process (a no-op once it is loaded)."""
    if "tensorflow" not in sys.modules and _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def uninstall() -> None:
    # a new list, not remove(): a search under way in another thread skips no finder
    sys.meta_path = [f for f in sys.meta_path if f is not _HOOK]
