"""Downloading source photos: sources and fallbacks, retries, verification, cache (no Beam).

`Fetcher.fetch(image)` tries the configured sources in order (the Flickr original, the
300K thumbnail, the CVDF mirror, or a URL template) and returns the first verified photo,
or raises `FetchFailed` with the reason of the last source tried and what each one did.

- Retries: connection errors, timeouts, truncated bodies, 5xx and 429 are retried with
  exponential backoff and jitter (Retry-After honoured); other 4xx are final. The jitter
  is a hash of the URL and attempt, so runs are repeatable.
- Verification: the original must match the table's size and base64 MD5 when given
  (`checksum`); Flickr's deleted-photo placeholder, by redirect target or by body digest,
  is `placeholder`; a body that is not an image file is `not_an_image`.
- Cache: verified bytes and final failures are written per ImageID and source under
  --cache_dir (temp name, then rename), so a rerun requests nothing it already settled
  and a killed run never leaves a half file that counts as done.
- Safety: see netsafety.py; every redirect hop is checked, and ImageIDs are validated
  before they name a cache file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import threading
import time
import urllib.parse

import requests

from pipelines import files, netsafety
from schemas.openimages import md5_base64
from schemas.records import ImageRow

SOURCES = ("original", "thumbnail", "cvdf", "template")
CVDF_BASE_URL = "https://open-images-dataset.s3.amazonaws.com"
PLACEHOLDER_URL_MARK = "photo_unavailable"
_IMAGE_ID = re.compile(r"^[0-9a-f]{16}$")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00",
          b"MM\x00*")

# Failure reasons of the fetch stage.
NOT_FOUND = "not_found"              # 404 or 410: the photo is gone
HTTP_ERROR = "http_error"            # another 4xx, or 5xx that outlasted the retries
RATE_LIMITED = "rate_limited"        # 429 that outlasted the retries
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
TRUNCATED = "truncated"              # fewer bytes than Content-Length, after retries
TOO_LARGE = "too_large"              # over --max_image_bytes
REDIRECT_LOOP = "redirect_loop"      # more than max_redirects hops
BLOCKED_URL = "blocked_url"          # not http(s), or a private/internal address
PLACEHOLDER = "placeholder"          # Flickr's "photo unavailable" stand-in
CHECKSUM = "checksum"                # size or MD5 differ from the table's
NOT_AN_IMAGE = "not_an_image"
NO_URL = "no_url"                    # no configured source has a URL for this photo
BAD_IMAGE_ID = "bad_image_id"
REASONS = (NOT_FOUND, HTTP_ERROR, RATE_LIMITED, TIMEOUT, CONNECTION_ERROR, TRUNCATED,
           TOO_LARGE, REDIRECT_LOOP, BLOCKED_URL, PLACEHOLDER, CHECKSUM, NOT_AN_IMAGE,
           NO_URL, BAD_IMAGE_ID)
# Final answers about a URL, cached so reruns do not ask again. Timeouts, connection
# errors, 5xx and 429 are not: they may succeed next time.
_PERMANENT = {NOT_FOUND, HTTP_ERROR, TOO_LARGE, REDIRECT_LOOP, BLOCKED_URL, PLACEHOLDER,
              CHECKSUM, NOT_AN_IMAGE}


@dataclasses.dataclass(frozen=True)
class FetchConfig:
    """How photos are downloaded (flags of the same names, see options.py)."""

    image_source: tuple[str, ...] = ("original", "thumbnail", "cvdf")
    url_template: str = ""
    cvdf_base_url: str = CVDF_BASE_URL
    fetch_concurrency: int = 64
    fetch_per_host: int = 64
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    max_image_bytes: int = 50 << 20
    fetch_attempts: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    max_redirects: int = 5
    allow_private_network: bool = False
    cache_dir: str = ""
    placeholder_sha256: tuple[str, ...] = ()

    def __post_init__(self):
        unknown = set(self.image_source) - set(SOURCES)
        if unknown or not self.image_source:
            raise ValueError(f"--image_source takes some of {SOURCES}, not {list(self.image_source)}")
        if "template" in self.image_source:
            if "{image_id}" not in self.url_template:
                raise ValueError("--image_source template needs --url_template with {image_id}")
            try:
                self.url_template.format(image_id="0" * 16, subset="train")
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(f"--url_template may use only {{image_id}} and {{subset}}: "
                                 f"{type(err).__name__} {err}") from None
        if self.fetch_concurrency < 1 or self.fetch_per_host < 1 or self.fetch_attempts < 1:
            raise ValueError("--fetch_concurrency, --fetch_per_host, --fetch_attempts must be >= 1")


def default_cache_dir() -> str:
    return files.user_cache_dir("images")


class FetchFailed(Exception):
    """No source gave a verified photo. `reason` is the last source's; `detail` has all."""

    def __init__(self, reason: str, detail: str, url: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.url = reason, detail, url


@dataclasses.dataclass(frozen=True)
class Fetched:
    """A verified photo and where it came from."""

    data: bytes
    source: str
    url: str
    from_cache: bool


def source_urls(image: ImageRow, config: FetchConfig) -> list[tuple[str, str]]:
    """(source, URL) pairs to try in order; sources without a URL are skipped."""
    out = []
    for source in config.image_source:
        if source == "original":
            url = image.original_url
        elif source == "thumbnail":
            url = image.thumbnail_url
        elif source == "cvdf":
            subset = image.subset if image.subset in ("train", "validation", "test") else "train"
            url = f"{config.cvdf_base_url.rstrip('/')}/{subset}/{image.image_id}.jpg"
        else:
            url = config.url_template.format(image_id=image.image_id, subset=image.subset)
        if url:
            out.append((source, url))
    return out


def looks_like_image(data: bytes) -> bool:
    """Magic-number sniff: JPEG, PNG, GIF, BMP, TIFF or WebP."""
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def verify(data: bytes, source: str, image: ImageRow, placeholder_digests: set[str]) -> tuple[str, str]:
    """('', '') if the bytes are acceptable, else (reason, detail)."""
    if hashlib.sha256(data).hexdigest() in placeholder_digests:
        return PLACEHOLDER, "body is a known placeholder image"
    if not looks_like_image(data):
        return NOT_AN_IMAGE, f"body starts with {data[:16]!r}"
    if source == "original":
        if image.original_size and len(data) != image.original_size:
            return CHECKSUM, f"{len(data)} bytes, the table says {image.original_size}"
        if image.original_md5:
            got = md5_base64(data)
            if got != image.original_md5:
                return CHECKSUM, f"MD5 {got}, the table says {image.original_md5}"
    return "", ""


class _Attempt(Exception):
    """One request's failure: retryable or not, and after how long to retry."""

    def __init__(self, reason: str, detail: str, retry: bool, wait_s: float | None = None):
        super().__init__(detail)
        self.reason, self.detail, self.retry, self.wait_s = reason, detail, retry, wait_s


class Fetcher:
    """Thread-safe downloader: one per worker, built in a DoFn's setup()."""

    def __init__(self, config: FetchConfig, sleep=time.sleep):
        self.config = config
        self.cache_dir = config.cache_dir or default_cache_dir()
        self._session = netsafety.guarded_session(config.fetch_per_host, config.allow_private_network)
        self._placeholders = set(config.placeholder_sha256)
        self._host_slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()
        self._sleep = sleep
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "cache_hits": 0}
        self._tmp_dir = os.path.join(self.cache_dir, ".tmp")
        remove_orphaned_temp_files(self._tmp_dir)

    def close(self) -> None:
        self._session.close()

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] = self.stats.get(key, 0) + n

    def _slot(self, url: str) -> threading.BoundedSemaphore:
        try:
            host = urllib.parse.urlsplit(url).netloc
        except ValueError:  # malformed; check_url refuses it inside the slot
            host = ""
        with self._lock:
            if host not in self._host_slots:
                self._host_slots[host] = threading.BoundedSemaphore(self.config.fetch_per_host)
            return self._host_slots[host]

    # -- cache -------------------------------------------------------------------------
    def _cache_path(self, source: str, image_id: str) -> str:
        return os.path.join(self.cache_dir, source, image_id[:2], image_id)

    def _cache_read(self, source: str, image_id: str) -> tuple[bytes | None, dict | None]:
        path = self._cache_path(source, image_id)
        try:
            with open(path + ".img", "rb") as f:
                return f.read(), None
        except FileNotFoundError:
            pass
        try:
            with open(path + ".failed.json") as f:
                return None, json.load(f)
        except (FileNotFoundError, ValueError):
            return None, None

    def _cache_write(self, source: str, image_id: str, suffix: str, data: bytes) -> None:
        """Write to .tmp/<pid>-... first, then rename: a killed worker leaves only a temp
        file, which never counts as cached and is removed by the next Fetcher."""
        path = self._cache_path(source, image_id) + suffix
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.makedirs(self._tmp_dir, exist_ok=True)
        tmp = os.path.join(self._tmp_dir, f"{os.getpid()}-{threading.get_ident()}-{image_id}{suffix}")
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)

    # -- fetching ----------------------------------------------------------------------
    def fetch(self, image: ImageRow) -> Fetched:
        """The first verified photo among the configured sources.

        Raises:
          FetchFailed: with the last source's reason and every source's outcome.
        """
        if not _IMAGE_ID.match(image.image_id):
            raise FetchFailed(BAD_IMAGE_ID, f"ImageID {image.image_id!r} is not 16 hex digits")
        tried: list[str] = []
        last = (NO_URL, "no configured source has a URL for this photo", "")
        for source, url in source_urls(image, self.config):
            data, failed = self._cache_read(source, image.image_id)
            if data is not None:
                self._count("cache_hits")
                return Fetched(data, source, url, True)
            if failed is not None:
                self._count("cache_hits")
                reason, detail = failed["reason"], failed["detail"]
            else:
                try:
                    data = self._download(url)
                    reason, detail = verify(data, source, image, self._placeholders)
                except _Attempt as err:
                    reason, detail = err.reason, err.detail
                if not reason:
                    self._cache_write(source, image.image_id, ".img", data)
                    return Fetched(data, source, url, False)
                if reason in _PERMANENT:
                    self._cache_write(source, image.image_id, ".failed.json", json.dumps(
                        {"reason": reason, "detail": detail, "url": url}).encode())
            tried.append(f"{source}: {reason} ({detail})")
            last = (reason, detail, url)
        raise FetchFailed(last[0], "; ".join(tried) or last[1], last[2])

    def _download(self, url: str) -> bytes:
        """GET with retries; raises _Attempt with retry=False for final outcomes."""
        attempts = self.config.fetch_attempts
        for attempt in range(attempts):
            try:
                with self._slot(url):
                    return self._get_following_redirects(url)
            except _Attempt as err:
                if not err.retry or attempt == attempts - 1:
                    raise _Attempt(err.reason, err.detail + (
                        f" after {attempts} attempts" if err.retry else ""), False) from None
                self._count("retries")
                self._sleep(err.wait_s if err.wait_s is not None else self._backoff(url, attempt))
        raise AssertionError("unreachable")

    def _backoff(self, url: str, attempt: int) -> float:
        jitter = int(hashlib.sha256(f"{url}#{attempt}".encode()).hexdigest()[:8], 16) / 2**32
        return min(self.config.max_backoff_s, self.config.backoff_s * 2**attempt) * (0.5 + 0.5 * jitter)

    def _get_following_redirects(self, url: str) -> bytes:
        c = self.config
        for _ in range(c.max_redirects + 1):
            try:
                netsafety.check_url(url, c.allow_private_network)
            except netsafety.BlockedURL as err:
                raise _Attempt(BLOCKED_URL, f"{url}: {err}", False) from None
            self._count("requests")
            try:
                resp = self._session.get(url, stream=True, allow_redirects=False,
                                         timeout=(c.connect_timeout_s, c.read_timeout_s))
            except netsafety.BlockedURL as err:
                raise _Attempt(BLOCKED_URL, f"{url}: {err}", False) from None
            except ValueError as err:  # requests parses a malformed Location eagerly
                raise _Attempt(BLOCKED_URL, f"{url}: malformed URL or redirect: {err}",
                               False) from None
            except requests.exceptions.Timeout as err:
                raise _Attempt(TIMEOUT, f"{url}: {err}", True) from None
            except requests.exceptions.ConnectionError as err:
                blocked = _cause(err, netsafety.BlockedURL)
                if blocked:
                    raise _Attempt(BLOCKED_URL, f"{url}: {blocked}", False) from None
                raise _Attempt(CONNECTION_ERROR, f"{url}: {err}", True) from None
            except requests.exceptions.RequestException as err:
                raise _Attempt(BLOCKED_URL, f"{url}: {err}", False) from None
            with resp:
                if resp.is_redirect:
                    try:
                        target = urllib.parse.urljoin(url, resp.headers.get("Location", ""))
                    except ValueError as err:
                        raise _Attempt(BLOCKED_URL, f"{url}: malformed redirect: {err}", False) from None
                    if PLACEHOLDER_URL_MARK in target:
                        raise _Attempt(PLACEHOLDER, f"redirected to {target}", False)
                    url = target
                    continue
                return self._read_body(url, resp)
        raise _Attempt(REDIRECT_LOOP, f"more than {c.max_redirects} redirects, last {url}", False)

    def _read_body(self, url: str, resp: requests.Response) -> bytes:
        status = resp.status_code
        if status == 429 or status >= 500:
            wait = _retry_after(resp.headers.get("Retry-After"), self.config.max_backoff_s)
            reason = RATE_LIMITED if status == 429 else HTTP_ERROR
            raise _Attempt(reason, f"{url}: HTTP {status}", True, wait)
        if status in (404, 410):
            raise _Attempt(NOT_FOUND, f"{url}: HTTP {status}", False)
        if status != 200:
            raise _Attempt(HTTP_ERROR, f"{url}: HTTP {status}", False)
        cap = self.config.max_image_bytes
        if int(resp.headers.get("Content-Length") or 0) > cap:
            raise _Attempt(TOO_LARGE, f"{url}: Content-Length {resp.headers['Content-Length']} "
                                      f"is over --max_image_bytes {cap}", False)
        chunks, size = [], 0
        try:
            for chunk in resp.iter_content(1 << 16):
                size += len(chunk)
                if size > cap:
                    raise _Attempt(TOO_LARGE, f"{url}: body over --max_image_bytes {cap}", False)
                chunks.append(chunk)
        except requests.exceptions.ChunkedEncodingError as err:
            raise _Attempt(TRUNCATED, f"{url}: {err}", True) from None
        except requests.exceptions.ConnectionError as err:
            if "timed out" in str(err).lower():
                raise _Attempt(TIMEOUT, f"{url}: {err}", True) from None
            raise _Attempt(TRUNCATED, f"{url}: {err}", True) from None
        return b"".join(chunks)


def remove_orphaned_temp_files(tmp_dir: str) -> int:
    """Delete temp files of processes that no longer run (killed mid-write); returns how many."""
    removed = 0
    try:
        names = os.listdir(tmp_dir)
    except FileNotFoundError:
        return 0
    for name in names:
        pid = name.split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.remove(os.path.join(tmp_dir, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _retry_after(value: str | None, cap: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form), capped; None if absent."""
    try:
        return min(max(float(value), 0.0), cap) if value is not None else None
    except ValueError:
        return None


def _cause(err: BaseException, kind: type) -> BaseException | None:
    """The first exception of `kind` in an exception's chain or arguments."""
    seen = set()
    stack = [err]
    while stack:
        e = stack.pop()
        if id(e) in seen or e is None:
            continue
        seen.add(id(e))
        if isinstance(e, kind):
            return e
        stack += [e.__cause__, e.__context__] + [a for a in getattr(e, "args", ())
                                                  if isinstance(a, BaseException)]
        stack.append(getattr(e, "reason", None))
    return None
