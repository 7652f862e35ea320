"""Steady progress lines from inside a stage: what a long build is doing, without flooding.

Beam's counters are read only when a job ends on the local runner, so each worker logs
its own progress at most every `every_s` seconds (Dataflow shows these in worker logs).
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger("open_sandwiches.progress")


class Progress:
    """Counts events and logs totals and the rate at a steady pace."""

    def __init__(self, what: str, every_s: float = 10.0):
        self._what, self._every = what, every_s
        self._counts: dict[str, int] = {}
        self._start = self._last = time.monotonic()

    def add(self, **counts: int) -> None:
        for key, n in counts.items():
            self._counts[key] = self._counts.get(key, 0) + n
        now = time.monotonic()
        if now - self._last >= self._every:
            self._last = now
            main = next(iter(self._counts.values()), 0)
            rate = main / max(now - self._start, 1e-9)
            detail = ", ".join(f"{k} {v}" for k, v in self._counts.items())
            log.info("%s: %s (%.1f/s)", self._what, detail, rate)
