"""One attempt at one URL: redirects, limits, and every way a hostile answer can fail it.

`Client.get(url, deadline)` makes one GET (following up to max_redirects redirects, each
hop checked by netsafety) and returns an `Outcome`: the body, or a failure reason from
schemas/failures.py with whether to retry and what the server asked for (Retry-After,
429). It never raises: a Content-Length of `abc`, a gzip header over a body that is not
gzip, a Retry-After of `nan` or an exception nobody foresaw all become outcomes, so one
answer can never end a job. The deadline is enforced by netsafety.Watchdog, which cuts a
body that trickles in under the read timeout.
"""
from __future__ import annotations

import dataclasses
import email.utils
import http.client
import math
import re
import time
import urllib.parse
from typing import Callable

import requests
import urllib3

from pipelines import netsafety
from schemas import failures
from schemas.records import STAGE_FETCH


def _declared(name: str) -> str:
    return failures.declared(STAGE_FETCH, name)


NOT_FOUND = _declared("not_found")
HTTP_ERROR = _declared("http_error")
SERVER_ERROR = _declared("server_error")
RATE_LIMITED = _declared("rate_limited")
TIMEOUT = _declared("timeout")
CONNECTION_ERROR = _declared("connection_error")
TRUNCATED = _declared("truncated")
BAD_RESPONSE = _declared("bad_response")
TOO_LARGE = _declared("too_large")
REDIRECT_LOOP = _declared("redirect_loop")
BLOCKED_URL = _declared("blocked_url")
PLACEHOLDER = _declared("placeholder")
CHECKSUM = _declared("checksum")
NOT_AN_IMAGE = _declared("not_an_image")
NO_URL = _declared("no_url")
BAD_IMAGE_ID = _declared("bad_image_id")
UNEXPECTED = _declared("unexpected")

PLACEHOLDER_URL_MARK = "photo_unavailable"
_DELTA_SECONDS = re.compile(r"\d{1,12}(\.\d{1,6})?")
_LENGTH = re.compile(r"\s*\d{1,20}\s*")


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one attempt got. `reason` is '' when `data` holds the body."""

    reason: str = ""
    detail: str = ""
    data: bytes = b""
    retry: bool = False        # worth another attempt
    wait_s: float | None = None  # the server's Retry-After, parsed and capped
    pause: bool = False        # pause the host (429, or 503 with Retry-After)
    throttled: bool = False    # 429: the host wants fewer requests at once
    status: int = 0            # the HTTP status of the last answer; 0 if none came


class _Fail(Exception):
    def __init__(self, outcome: Outcome):
        super().__init__(outcome.detail)
        self.outcome = outcome


def retry_after_s(value: str | None, now_epoch: float, cap: float) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date, clamped to
    [0, cap]. None when absent or nonsense (`nan`, `-1`, `soon`): the caller backs off."""
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
            seconds = when.timestamp() - now_epoch
        except Exception:  # parsedate raises TypeError, ValueError, IndexError, ...
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), cap)


def declared_length(headers) -> int | None:
    """Content-Length as a number, or None when absent or malformed (`abc`, `5, 6`):
    then the body's own end decides, under the size cap. `5, 5` (a repeated header) is 5."""
    value = headers.get("Content-Length")
    if value is None:
        return None
    parts = value.split(",")
    if not all(_LENGTH.fullmatch(p) for p in parts):
        return None
    lengths = {int(p) for p in parts}
    return lengths.pop() if len(lengths) == 1 else None


class Client:
    """HTTP for the fetcher: a guarded session, a watchdog, and the mapping of answers
    and exceptions onto failure reasons. Thread-safe; built in a DoFn's setup()."""

    def __init__(self, config, count: Callable[..., None], clock=time.monotonic,
                 wall=time.time):
        self.config = config
        self._count = count
        self._clock, self._wall = clock, wall
        self._session = netsafety.guarded_session(config.fetch_per_host,
                                                  config.allow_private_network)
        self._watchdog = netsafety.Watchdog(clock)

    def close(self) -> None:
        self._watchdog.close()
        self._session.close()

    def get(self, url: str, deadline: float) -> Outcome:
        """One attempt, redirects included, never past `deadline` (a monotonic time)."""
        try:
            with self._watchdog.guard(deadline) as guard:
                try:
                    out = self._follow(url, deadline)
                except _Fail as fail:
                    out = fail.outcome
                except Exception as err:  # whatever the answer provoked: a reason, not a crash
                    out = exception_outcome(url, err)
            if guard.expired:
                # Whatever came back, cut short: a cut while the headers arrive can even
                # look like a complete empty answer. A timeout is retried, never cached.
                self._count("deadline_cuts")
                return Outcome(TIMEOUT, f"{url}: cut at the deadline (--fetch_deadline_s "
                                        f"{self.config.deadline_s:g}) while "
                                        f"{out.reason or 'reading the answer'}",
                               retry=True, status=out.status)
            return out
        except Exception as err:
            return Outcome(UNEXPECTED, f"{url}: {type(err).__name__}: {err}")

    def _follow(self, url: str, deadline: float) -> Outcome:
        c = self.config
        for _ in range(c.max_redirects + 1):
            remaining = deadline - self._clock()
            if remaining <= 0:
                return Outcome(TIMEOUT, f"{url}: no time left within --fetch_deadline_s",
                               retry=True)
            try:
                request = self._session.prepare_request(requests.Request("GET", url))
                checked = request.url
                netsafety.check_prepared(checked, c.allow_private_network)
            except netsafety.BlockedURL as err:
                return Outcome(BLOCKED_URL, f"{url}: {err}")
            except (requests.exceptions.RequestException, ValueError, UnicodeError) as err:
                return Outcome(BLOCKED_URL, f"{url}: malformed URL: {err}")
            self._count("requests")
            try:  # exactly the request that was checked
                resp = self._session.send(request, stream=True, allow_redirects=False, timeout=(
                    min(c.connect_timeout_s, remaining), min(c.read_timeout_s, remaining)))
            except requests.exceptions.RequestException:
                raise
            except ValueError as err:  # requests parses a Location eagerly, even unfollowed
                return Outcome(BLOCKED_URL, f"{url}: malformed URL or redirect: {err}")
            with resp:
                if not resp.is_redirect:
                    return self._answer(checked, resp)
                try:
                    target = urllib.parse.urljoin(checked, resp.headers["Location"])
                except ValueError as err:
                    return Outcome(BLOCKED_URL, f"{url}: malformed redirect: {err}")
                if PLACEHOLDER_URL_MARK in target:
                    return Outcome(PLACEHOLDER, f"redirected to {target}", status=resp.status_code)
                url = target
        return Outcome(REDIRECT_LOOP, f"more than {c.max_redirects} redirects, last {url}")

    def _answer(self, url: str, resp: requests.Response) -> Outcome:
        status = resp.status_code
        if status == 429 or 500 <= status <= 599:
            wait = retry_after_s(resp.headers.get("Retry-After"), self._wall(),
                                 self.config.max_backoff_s)
            if status == 429:
                self._count("answers_429")
                return Outcome(RATE_LIMITED, f"{url}: HTTP 429", retry=True, wait_s=wait,
                               pause=True, throttled=True, status=status)
            self._count("answers_5xx")
            return Outcome(SERVER_ERROR, f"{url}: HTTP {status}", retry=True, wait_s=wait,
                           pause=status == 503 and wait is not None, status=status)
        if status in (404, 410):
            return Outcome(NOT_FOUND, f"{url}: HTTP {status}", status=status)
        if status != 200:
            return Outcome(HTTP_ERROR, f"{url}: HTTP {status}", status=status)
        cap = self.config.max_image_bytes
        # Transfer-Encoding overrides Content-Length (RFC 9112 6.3), as http.client reads
        # the body: a chunked answer's Content-Length is ignored, not trusted.
        declared = None if getattr(resp.raw, "chunked", False) else declared_length(resp.headers)
        if declared is not None and declared > cap:
            return Outcome(TOO_LARGE, f"{url}: Content-Length {declared} is over "
                                      f"--max_image_bytes {cap}", status=status)
        encoded = resp.headers.get("Content-Encoding", "").strip().lower() not in ("", "identity")
        if declared is not None and not encoded:
            return self._read_exactly(url, resp, declared)
        chunks, size = [], 0
        try:
            for chunk in resp.iter_content(1 << 16):
                size += len(chunk)
                if size > cap:
                    return Outcome(TOO_LARGE, f"{url}: body over --max_image_bytes {cap}",
                                   status=status)
                chunks.append(chunk)
        except ValueError as err:  # a chunk size such as "-10" parses, then cannot be read
            return Outcome(BAD_RESPONSE, f"{url}: malformed body framing: {err}", status=status)
        return Outcome(data=b"".join(chunks), status=status)

    def _read_exactly(self, url: str, resp: requests.Response, length: int) -> Outcome:
        """Read the declared length and stop: a server that keeps the connection open
        after a body whose Content-Length http.client could not parse (`5, 5`) must not
        hold us until the read timeout."""
        chunks, remaining = [], length
        while remaining > 0:
            chunk = resp.raw.read(min(1 << 16, remaining), decode_content=False)
            if not chunk:
                return Outcome(TRUNCATED, f"{url}: body ended after {length - remaining} of "
                                          f"{length} bytes", retry=True, status=resp.status_code)
            chunks.append(chunk)
            remaining -= len(chunk)
        return Outcome(data=b"".join(chunks), status=resp.status_code)


def exception_outcome(url: str, err: BaseException) -> Outcome:
    """The reason for an exception raised while requesting or reading `url`."""
    kind = type(err).__name__
    blocked = _cause(err, netsafety.BlockedURL)
    if blocked is not None:
        return Outcome(BLOCKED_URL, f"{url}: {blocked}")
    if isinstance(err, (requests.exceptions.ContentDecodingError,
                        requests.exceptions.InvalidHeader, urllib3.exceptions.DecodeError)):
        return Outcome(BAD_RESPONSE, f"{url}: {kind}: {err}")
    if isinstance(err, (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError,
                        TimeoutError)):
        return Outcome(TIMEOUT, f"{url}: {err}", retry=True)
    if isinstance(err, (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                        requests.exceptions.InvalidSchema, requests.exceptions.URLRequired)):
        return Outcome(BLOCKED_URL, f"{url}: {err}")
    if isinstance(err, (requests.exceptions.ChunkedEncodingError,
                        urllib3.exceptions.ProtocolError, http.client.IncompleteRead)):
        if "timed out" in str(err).lower():
            return Outcome(TIMEOUT, f"{url}: {err}", retry=True)
        return Outcome(TRUNCATED, f"{url}: {err}", retry=True)
    if isinstance(err, (requests.exceptions.ConnectionError, ConnectionError)):
        broken = _cause(err, http.client.HTTPException)
        if broken is not None and not isinstance(broken, (http.client.RemoteDisconnected,
                                                          http.client.IncompleteRead)):
            return Outcome(BAD_RESPONSE, f"{url}: {type(broken).__name__}: {broken}")
        if "timed out" in str(err).lower():
            return Outcome(TIMEOUT, f"{url}: {err}", retry=True)
        return Outcome(CONNECTION_ERROR, f"{url}: {err}", retry=True)
    if isinstance(err, http.client.HTTPException):
        return Outcome(BAD_RESPONSE, f"{url}: {kind}: {err}")
    if isinstance(err, OSError):
        return Outcome(CONNECTION_ERROR, f"{url}: {kind}: {err}", retry=True)
    return Outcome(UNEXPECTED, f"{url}: {kind}: {err}")


def _cause(err: BaseException, kind: type) -> BaseException | None:
    """The first exception of `kind` in an exception's chain or arguments."""
    seen = set()
    stack = [err]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        stack += [e.__cause__, e.__context__] + [a for a in getattr(e, "args", ())
                                                  if isinstance(a, BaseException)]
        stack.append(getattr(e, "reason", None))
    return None
