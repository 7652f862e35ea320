"""Progress of a long build: tqdm bars in a terminal, steady log lines everywhere else.

Stages count from inside their DoFns with `Progress(what).add(photos=1, failed=0)` (the
first count is what the bar counts; the others ride along). Where the job runs in the
launching process (Beam's local runner in memory or on threads) and stderr is a terminal,
the launcher opens bars for the run (`bars(...)`): one bar per stage, shared by every DoFn
instance in the process, with its count, rate and, once the plan's totals arrive through
`expect()`, its percentage and ETA. Elsewhere (remote or multi-processing workers, CI
logs, a pipe) no bars are open and each instance logs its totals and rate at most every
`every_s` seconds: Beam's counters are read only when a job ends, and Dataflow shows
these lines in the worker logs.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Iterator, Sequence

log = logging.getLogger("open_sandwiches.progress")

_lock = threading.Lock()
_bars: dict | None = None  # what -> tqdm bar while bars are open in this process
_extra: dict[str, dict[str, int]] = {}


class Progress:
    """Counts events: on this process's bar for `what` if one is open, else in log lines."""

    def __init__(self, what: str, every_s: float = 10.0):
        self._what, self._every = what, every_s
        self._counts: dict[str, int] = {}
        self._start = self._last = time.monotonic()

    def add(self, **counts: int) -> None:
        if _bars is not None and _on_bar(self._what, counts):
            return
        for key, n in counts.items():
            self._counts[key] = self._counts.get(key, 0) + n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            main = next(iter(self._counts.values()), 0)
            rate = main / max(now - self._start, 1e-9)
            detail = ", ".join(f"{k} {v}" for k, v in self._counts.items())
            log.info("%s: %s (%.1f/s)", self._what, detail, rate)


def _on_bar(what: str, counts: dict[str, int]) -> bool:
    with _lock:
        bar = (_bars or {}).get(what)
        if bar is None:
            return False
        items = iter(counts.items())
        _, n = next(items, ("", 0))
        extra = _extra.setdefault(what, {})
        for key, value in items:
            extra[key] = extra.get(key, 0) + value
        if extra:
            bar.set_postfix_str(", ".join(
                f"{k} {v / 2**20:.1f} MiB" if k == "bytes" else f"{k} {v}"
                for k, v in extra.items()), refresh=False)
        bar.update(n)
    return True


def expect(what: str, n: int) -> None:
    """Add n (or take -n) to the total of `what`'s bar, so it shows a percentage and an
    ETA; nothing where no bar is open."""
    with _lock:
        bar = (_bars or {}).get(what)
        if bar is not None:
            bar.total = (bar.total or 0) + n
            bar.refresh()


def wanted(runs_in_process: bool, stream=None) -> bool:
    """Bars only where the DoFns run in this process and someone watches a terminal."""
    stream = sys.stderr if stream is None else stream
    return runs_in_process and hasattr(stream, "isatty") and stream.isatty()


@contextlib.contextmanager
def bars(stages: Sequence[tuple[str, str, str]], file=None) -> Iterator[None]:
    """Open one bar per (what, label, unit) for the duration, on `file` (stderr); log
    records are written above the bars meanwhile."""
    global _bars
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm
    out = sys.stderr if file is None else file
    with _lock:
        _extra.clear()
        _bars = {what: tqdm(desc=label, unit=unit, position=i, file=out, leave=True,
                            dynamic_ncols=True, mininterval=0.5, smoothing=0.1)
                 for i, (what, label, unit) in enumerate(stages)}
    try:
        with logging_redirect_tqdm():
            yield
    finally:
        with _lock:
            for bar in _bars.values():
                bar.close()
            _bars = None
