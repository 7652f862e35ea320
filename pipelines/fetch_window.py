"""The download window: many photos in flight, one queue per host, pauses and backoff (no Beam).

A sliding window, not batches: a photo is admitted as soon as there is room, each attempt
runs on a pool thread as soon as its host allows, and each result is handed back as soon
as it is done, so one slow photo holds one slot and nothing else. At most
`concurrency` requests are in flight at once; at most `per_host` go to one host.

Per host, the window keeps a queue (retries first, then new photos) and two controls:

- a concurrency limit (AIMD): a 429 halves it, once per round of requests (until the host
  has shown a rate limit: below), and each normal answer adds one back, up to `per_host`.
  The 429'd photo itself waits its Retry-After in the timer heap, so no slot sleeps.
- a pause, when the host is over its rate: when at least half of its last 32 answers
  (and at least 4) are 429s, new requests to it stop until the time the 429 asked for
  (capped), its limit is cut to the share of them it let through (after any halving), the
  answers are counted afresh, and until the limit is back at `per_host` it grows by one
  a second of answers rather than one an answer, probing the host's rate instead of
  bursting into it. A 503 with Retry-After pauses the host as well. While a
  host is paused its photos wait in its queue and other hosts' photos fill the window.

  Why not pause on every 429: a host that sheds a share of its load whatever the rate
  (issue 14's storm) would stop once a round, which caps a client at 0.69-0.87x a plain
  thread pool (benchmarks/README.md); a host that refuses most of what it is sent is a
  rate limit, and pausing and pacing it is what saves its refusals (about 4x fewer than
  the thread pool against a token bucket, with no photo lost).

Retries wait in a timer heap, not in a thread. Photos that started (their deadline runs)
and whose share of it ends while they wait for their host are moved on to their next
source (Fetcher.expire). One helper thread wakes for these timed events; everything else
happens in the thread that caused it.

    window = Window(fetcher, concurrency=64, per_host=64)
    while not window.offer(key, image):   # full: wait for a result or room
        window.wait()
        handle(window.take())
    handle(window.take()); ...; handle(window.drain())   # at the end: everything
"""
from __future__ import annotations

import collections
import concurrent.futures
import heapq
import itertools
import math
import threading
import time
from typing import Iterator

from pipelines.fetch import UNEXPECTED, Fetched, FetchFailed, Fetcher, Job, Step

Result = tuple[object, "Fetched | FetchFailed"]

RECENT_ANSWERS = 32  # a host's refusal share is taken over its last this many answers
OVER_RATE = (4, 0.5)  # at least this many 429s, and this share of them: over its rate


class Host:
    """One host's queue and its controls: a concurrency limit and a pause (see above).

    `signal` is the control law, kept apart from the threads so that tests can drive it
    with made-up answers and times."""

    __slots__ = ("retries", "fresh", "in_flight", "per_host", "limit", "paused_until",
                 "last_cut", "answers", "rate_limited", "grown_at")

    def __init__(self, per_host: int):
        self.retries: collections.deque = collections.deque()
        self.fresh: collections.deque = collections.deque()
        self.in_flight = 0
        self.per_host = per_host
        self.limit = float(per_host)
        self.paused_until = 0.0
        self.last_cut = -math.inf
        self.answers: collections.deque[bool] = collections.deque(maxlen=RECENT_ANSWERS)  # 429?
        self.rate_limited = False  # it once refused most of what it was sent
        self.grown_at = 0.0

    def queued(self) -> int:
        return len(self.retries) + len(self.fresh)

    def signal(self, step: Step, now: float) -> list[str]:
        """Apply what one attempt's answer says about the host; returns the counters it
        moves ("host_backoffs", "host_pauses")."""
        counts, over_rate, share = [], False, 0.0
        if step.throttled or step.answered:
            self.answers.append(step.throttled)
        if step.throttled:  # only a 429 can show the host over its rate: count then
            refused = sum(self.answers)
            share = refused / len(self.answers)
            over_rate = refused >= OVER_RATE[0] and share >= OVER_RATE[1]
            # Halve once per round: answers to requests sent before the last cut do not
            # cut again, or one burst of 429s would drive the limit to 1. A host that has
            # shown its rate is cut only when it refuses most again (below): its limit sits
            # near that rate, where a probe's lone 429 is expected.
            new_round = step.sent_at is None or step.sent_at >= self.last_cut
            if new_round and not self.rate_limited:
                self.limit = max(1.0, self.limit / 2)
                self.last_cut = now
                counts.append("host_backoffs")
        elif step.answered and self.limit < self.per_host:
            if self.rate_limited:  # probe its rate: +1 a second since the last answer, at most
                grow = min(1.0, max(0.0, now - self.grown_at))
            else:                  # +1 an answer: doubles a round
                grow = 1.0
            self.limit = min(float(self.per_host), self.limit + grow)
            if self.limit >= self.per_host:  # back where it started: no longer rate-limited
                self.rate_limited = False
        if step.answered:
            self.grown_at = now
        pauses = step.pause_s and (over_rate or not step.throttled)
        if pauses and now + step.pause_s > self.paused_until:
            if self.paused_until <= now:
                counts.append("host_pauses")
                if over_rate:  # send what it let through, and probe upward from there
                    self.rate_limited = True
                    self.limit = max(1.0, self.limit * (1 - share))
                    self.answers.clear()  # the next call is on answers at the new limit
                    self.last_cut = now
                    counts.append("host_backoffs")
            self.paused_until = now + step.pause_s
        return counts


class Window:
    """Up to `concurrency` requests in flight for photos offered by one caller thread.

    Args:
      fetcher: does each attempt (thread-safe, never raises for one photo).
      concurrency: requests in flight at most (--fetch_concurrency).
      per_host: requests in flight to one host at most (--fetch_per_host); the backoff
        limit recovers up to it.
      max_waiting: photos admitted but waiting (for a paused or busy host, or a retry
        time) at most; `offer` refuses more, which bounds memory when one host is paused.
    """

    def __init__(self, fetcher: Fetcher, concurrency: int, per_host: int,
                 max_waiting: int | None = None, clock=time.monotonic):
        self._fetcher, self._clock = fetcher, clock
        self._n, self._per_host = concurrency, per_host
        self._max_waiting = max_waiting or max(4 * concurrency, 16)
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # the caller waits on it for results or room
        self._tick = threading.Condition(lock)  # the timer waits on it for timed events
        self._hosts: dict[str, Host] = {}
        self._backlog: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._delayed: list = []   # (time, seq, job): retries waiting for their time
        self._expiry: list = []    # (time, seq, job): started jobs waiting in a host queue
        self._queued: dict[Job, int] = {}  # job -> seq of its expiry entry, while queued
        self._seq = itertools.count()
        self._done: collections.deque[Result] = collections.deque()
        self._in_flight = 0
        self._waiting = 0
        self._closed = False
        self._pool = concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="fetch")
        self._timer = threading.Thread(target=self._run_timer, name="fetch-timer", daemon=True)
        self._timer.start()

    # -- the caller's side -----------------------------------------------------------
    def offer(self, key: object, image) -> bool:
        """Admit a photo, unless `concurrency` requests are in flight or `max_waiting`
        photos wait: then False, and the caller waits and offers again."""
        with self._cond:
            if not self._has_room():
                return False
        first = self._fetcher.start(image, key)  # cache lookups: outside the lock
        with self._cond:
            if isinstance(first, Job):
                self._waiting += 1
                self._enqueue(first, first.host, 0.0, self._clock())
                self._pump(self._clock())
            else:
                self._done.append((key, first))
            self._cond.notify_all()
        return True

    def wait(self, timeout: float | None = None) -> None:
        """Block until a result is ready or there is room for another photo."""
        with self._cond:
            self._cond.wait_for(lambda: self._done or self._has_room(), timeout)

    def take(self) -> list[Result]:
        """The results done so far, (key, Fetched or FetchFailed) each; never blocks."""
        with self._cond:
            out = list(self._done)
            self._done.clear()
            self._pump(self._clock())  # dispatch what uncollected results held back
            return out

    def drain(self) -> Iterator[Result]:
        """Every remaining result, as each completes, until nothing is in flight or waiting."""
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._done or not (self._waiting or self._in_flight))
                if not self._done:
                    return
            yield from self.take()

    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def host_limit(self, host_key: str) -> float:
        """A host's current concurrency limit (per_host until it answers 429)."""
        with self._cond:
            host = self._hosts.get(host_key)
            return host.limit if host else float(self._per_host)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._tick.notify()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- scheduling (all under self._cond) -------------------------------------------
    def _has_room(self) -> bool:
        return self._in_flight < self._n and self._waiting < self._max_waiting

    def _host(self, key: str) -> Host:
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = Host(self._per_host)
        return host

    def _enqueue(self, job: Job, host_key: str, wait_s: float, now: float) -> None:
        job.host = host_key
        if wait_s > 0:
            heapq.heappush(self._delayed, (now + wait_s, next(self._seq), job))
            self._tick.notify()
            return
        host = self._host(host_key)
        if job.deadline is None:
            host.fresh.append(job)
        else:
            host.retries.append(job)
            seq = next(self._seq)
            self._queued[job] = seq
            ends = job.source_end if job.source_end is not None else job.deadline
            heapq.heappush(self._expiry, (ends, seq, job))
            self._tick.notify()
        self._backlog[host_key] = None

    def _pump(self, now: float) -> None:
        """Dispatch attempts while there are slots, results are being collected, and some
        backlogged host is neither paused nor at its limit; hosts take turns."""
        while self._in_flight < self._n and len(self._done) < self._n and self._backlog:
            for key in list(self._backlog):
                host = self._hosts[key]
                if host.paused_until > now or host.in_flight >= max(1, int(host.limit)):
                    continue
                job = (host.retries or host.fresh).popleft()
                self._queued.pop(job, None)
                if host.queued():
                    self._backlog.move_to_end(key)
                else:
                    del self._backlog[key]
                self._dispatch(job, host)
                break
            else:
                return

    def _dispatch(self, job: Job, host: Host) -> None:
        self._waiting -= 1
        self._in_flight += 1
        host.in_flight += 1
        try:
            self._pool.submit(self._work, job, host)
        except RuntimeError:  # the pool is shut down: the window is closing
            self._in_flight -= 1
            host.in_flight -= 1
            self._done.append((job.key, FetchFailed(UNEXPECTED, "the download window closed")))

    def _work(self, job: Job, host: Host) -> None:
        """On a pool thread: one attempt, then its consequences."""
        step = self._fetcher.attempt(job)  # never raises
        with self._cond:
            self._in_flight -= 1
            host.in_flight -= 1
            try:
                now = self._clock()
                self._signal(host, step, now)
                if step.result is not None:
                    self._done.append((job.key, step.result))
                else:
                    self._waiting += 1
                    self._enqueue(job, step.next_host, step.wait_s, now)
                self._pump(now)
            except Exception as err:  # a bug here must still not lose the photo
                self._done.append((job.key, FetchFailed(UNEXPECTED, f"{type(err).__name__}: {err}")))
            self._cond.notify_all()

    def _signal(self, host: Host, step: Step, now: float) -> None:
        paused_until = host.paused_until
        for name in host.signal(step, now):
            self._fetcher.count(name)
        if host.paused_until != paused_until:
            self._tick.notify()

    def _run_timer(self) -> None:
        """Release retries whose time came, expire jobs out of time, resume paused hosts."""
        with self._cond:
            while not self._closed:
                now = self._clock()
                before = (len(self._done), self._in_flight, self._waiting)
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, job = heapq.heappop(self._delayed)
                    self._enqueue(job, job.host, 0.0, now)
                while self._expiry and self._expiry[0][0] <= now:
                    _, seq, job = heapq.heappop(self._expiry)
                    if self._queued.get(job) == seq:
                        self._expire(job, now)
                self._pump(now)
                if (len(self._done), self._in_flight, self._waiting) != before:
                    self._cond.notify_all()
                self._tick.wait(self._next_wake(now))

    def _expire(self, job: Job, now: float) -> None:
        del self._queued[job]
        host = self._hosts[job.host]
        host.retries.remove(job)
        if not host.queued():
            self._backlog.pop(job.host, None)
        step = self._fetcher.expire(job)  # cache lookups only, no request; never raises
        if step.result is not None:
            self._waiting -= 1
            self._done.append((job.key, step.result))
        else:
            self._enqueue(job, step.next_host, 0.0, now)

    def _next_wake(self, now: float) -> float | None:
        times = [h[0][0] for h in (self._delayed, self._expiry) if h]
        times += [h.paused_until for h in self._hosts.values() if h.paused_until > now]
        return max(0.0, min(times) - now) if times else None
