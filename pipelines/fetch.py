"""Downloading source photos: sources and fallbacks, retries, deadlines, verification (no Beam).

A photo's download is a `Job` that moves through the configured sources in order (the
CVDF mirror, the Flickr original, the 300K thumbnail, a URL template). `Fetcher` knows how
to take one step of a job: `start` settles what the cache already knows, `attempt` makes
one request (redirects included) and says what to do next: done (a verified photo, or
`FetchFailed` with every source's outcome), retry on the same host after a wait, or move
to the next source. It never sleeps and never raises for one photo's sake, so a scheduler
(fetch_window.py) can keep many jobs in flight; `fetch(image)` runs one job to its end,
sleeping between steps, for callers that want one photo.

- Retries: timeouts, connection errors, truncated bodies, 5xx and 429 are retried with
  exponential backoff and jitter (Retry-After honoured, capped); other answers are final.
  The jitter is a hash of the URL and attempt, so runs are repeatable.
- Deadline: a photo takes at most --fetch_deadline_s from its first request, retries and
  fallbacks included. Each source may use the time left divided by the sources left, so
  one that trickles or hangs still leaves the next its share.
- Verification: the original must match the table's size and base64 MD5 when given
  (`checksum`); Flickr's deleted-photo placeholder, by redirect target or by body digest,
  is `placeholder`; a body that is not an image file is `not_an_image`.
- Cache (fetch_cache.py): verified bytes, and failures the table (schemas/failures.py)
  calls final, with the settings they depend on (and, for a mirror or template, its base
  URL). A cached failure whose settings changed is asked again; cached bytes are verified
  again against the current row and --max_image_bytes.
- Safety: netsafety.py checks every hop; ImageIDs are validated before they name a file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time

from pipelines import fetch_cache, fetch_http, files, jpegscans, keys, netsafety
from pipelines.fetch_http import (BAD_IMAGE_ID, BAD_RESPONSE, BLOCKED_URL, CHECKSUM,  # noqa: F401
                                  CONNECTION_ERROR, HTTP_ERROR, NO_URL, NOT_AN_IMAGE, NOT_FOUND,
                                  PLACEHOLDER, RATE_LIMITED, REDIRECT_LOOP, SERVER_ERROR,
                                  TIMEOUT, TOO_LARGE, TRUNCATED, UNEXPECTED)
from schemas import failures
from schemas.openimages import md5_base64
from schemas.records import SPLITS, STAGE_FETCH, ImageRow

SOURCES = ("original", "thumbnail", "cvdf", "template")
CVDF_BASE_URL = "https://open-images-dataset.s3.amazonaws.com"
REASONS = failures.names(STAGE_FETCH)
# Flags that make a source's URLs: its cached photos and failures depend on them too.
_SOURCE_SETTINGS = {"cvdf": ["cvdf_base_url"], "template": ["url_template"]}
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00",
          b"MM\x00*")


@dataclasses.dataclass(frozen=True)
class FetchConfig:
    """How photos are downloaded (flags of the same names, see options.py)."""

    image_source: tuple[str, ...] = ("cvdf", "original")
    url_template: str = ""
    cvdf_base_url: str = CVDF_BASE_URL
    fetch_concurrency: int = 64
    fetch_per_host: int = 64
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    deadline_s: float = 60.0
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
        if not self.deadline_s > 0 or not self.read_timeout_s > 0 or not self.connect_timeout_s > 0:
            raise ValueError("--fetch_deadline_s and the timeouts must be positive")


def default_cache_dir() -> str:
    return files.user_cache_dir("images")


class FetchFailed(Exception):
    """No source gave a verified photo. `reason` is the last source's; `detail` has all."""

    def __init__(self, reason: str, detail: str, url: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail, self.url = reason, detail, url


@dataclasses.dataclass(frozen=True)
class Fetched:
    """A verified photo and where it came from; `sha256` is of `data`."""

    data: bytes
    source: str
    url: str
    sha256: str = ""


@dataclasses.dataclass(eq=False)
class Job:
    """One photo on its way through its sources (mutated only by the Fetcher)."""

    image: ImageRow
    sources: list[tuple[str, str]]
    key: object = None           # the caller's handle, returned with the result
    index: int = 0               # the source being tried
    attempt: int = 0             # attempts made at that source
    host: str = ""               # netsafety.host_key of that source's URL
    deadline: float | None = None    # set by the first request
    source_end: float | None = None  # end of this source's share of the deadline
    tried: list[str] = dataclasses.field(default_factory=list)
    last: tuple[str, str, str] = (NO_URL, "no configured source has a URL for this photo", "")


@dataclasses.dataclass
class Step:
    """What one attempt led to: signals about the host it used, and what comes next.

    Exactly one of `result` (the job is over) and `next_host` (its next attempt goes to
    that host, not before `wait_s` seconds) is set."""

    host: str = ""                 # the host the attempt went to ('' if none was made)
    sent_at: float | None = None   # when the attempt began (monotonic)
    throttled: bool = False        # 429: back the host's concurrency off
    pause_s: float | None = None   # pause the host this long
    answered: bool = False         # the host answered normally: let its concurrency recover
    result: Fetched | FetchFailed | None = None
    next_host: str = ""
    wait_s: float = 0.0


def cache_folder(source: str, config: FetchConfig) -> str:
    """The cache folder of a source's photos and failures (fetch_cache.folder): for a
    source whose URLs our flags make (a mirror: `template`, `cvdf` off its default base
    URL), those flags' values name it too, so that changing them never serves old bytes."""
    values = [getattr(config, name) for name in _SOURCE_SETTINGS.get(source, [])]
    if source == "cvdf" and config.cvdf_base_url == CVDF_BASE_URL:
        values = []
    return fetch_cache.folder(source, values)


def source_urls(image: ImageRow, config: FetchConfig) -> list[tuple[str, str]]:
    """(source, URL) pairs to try in order; sources without a URL are skipped."""
    out = []
    for source in config.image_source:
        if source == "original":
            url = image.original_url
        elif source == "thumbnail":
            url = image.thumbnail_url
        elif source == "cvdf":
            subset = image.subset if image.subset in SPLITS else "train"
            url = f"{config.cvdf_base_url.rstrip('/')}/{subset}/{image.image_id}.jpg"
        else:
            url = config.url_template.format(image_id=image.image_id, subset=image.subset)
        if url:
            out.append((source, url))
    return out


def looks_like_image(data: bytes) -> bool:
    """Magic-number sniff: JPEG, PNG, GIF, BMP, TIFF or WebP."""
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def verify(data: bytes, source: str, image: ImageRow, placeholder_digests: set[str],
           max_bytes: int | None = None) -> tuple[str, str, str]:
    """(reason, detail, sha256): reason '' if the bytes are acceptable."""
    digest = hashlib.sha256(data).hexdigest()
    if max_bytes is not None and len(data) > max_bytes:
        return TOO_LARGE, f"{len(data)} bytes, over --max_image_bytes {max_bytes}", digest
    if digest in placeholder_digests:
        return PLACEHOLDER, "body is a known placeholder image", digest
    if not looks_like_image(data):
        return NOT_AN_IMAGE, f"body starts with {data[:16]!r}", digest
    checked = source == "original" and (image.original_size or image.original_md5)
    if not checked and data.startswith(b"\xff\xd8") and not jpegscans.reaches_end(data):
        # No size or MD5 to catch a short body (a Content-Length that lies low): never cache it
        return TRUNCATED, f"JPEG of {len(data)} bytes stops before its end-of-image marker", digest
    if source == "original":
        if image.original_size and len(data) != image.original_size:
            return CHECKSUM, f"{len(data)} bytes, the table says {image.original_size}", digest
        if image.original_md5:
            got = md5_base64(data)
            if got != image.original_md5:
                return CHECKSUM, f"MD5 {got}, the table says {image.original_md5}", digest
    return "", "", digest


class Fetcher:
    """Thread-safe downloader: one per worker, built in a DoFn's setup()."""

    def __init__(self, config: FetchConfig, sleep=time.sleep, clock=time.monotonic):
        self.config = config
        self.cache_dir = config.cache_dir or default_cache_dir()
        self._lock = threading.Lock()
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "cache_hits": 0}
        self.cache = fetch_cache.Cache(self.cache_dir, self.count)
        self._http = fetch_http.Client(config, self.count, clock)
        self._placeholders = set(config.placeholder_sha256)
        self._sleep, self._clock = sleep, clock
        self._folders = {s: cache_folder(s, config) for s in SOURCES}

    def close(self) -> None:
        self._http.close()

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] = self.stats.get(key, 0) + n

    # -- one photo, start to end -------------------------------------------------------
    def fetch(self, image: ImageRow) -> Fetched:
        """The first verified photo among the configured sources, sleeping between tries.

        Raises:
          FetchFailed: with the last source's reason and every source's outcome.
        """
        job = self.start(image)
        while isinstance(job, Job):
            step = self.attempt(job)
            if step.result is not None:
                job = step.result
            elif step.next_host == step.host and max(step.wait_s, step.pause_s or 0.0) > 0:
                self._sleep(max(step.wait_s, step.pause_s or 0.0))
        if isinstance(job, FetchFailed):
            raise job
        return job

    # -- steps, for a scheduler --------------------------------------------------------
    def start(self, image: ImageRow, key: object = None) -> Job | Fetched | FetchFailed:
        """A job at its first source the cache has not settled, or its result."""
        try:
            if not keys.is_image_id(image.image_id):
                return FetchFailed(BAD_IMAGE_ID, f"ImageID {image.image_id!r} is not 16 hex digits")
            return self._resolve(Job(image, source_urls(image, self.config), key))
        except Exception as err:  # one photo's trouble never reaches the caller
            return FetchFailed(UNEXPECTED, f"{type(err).__name__}: {err}")

    def attempt(self, job: Job) -> Step:
        """One request at the job's current source, and what it leads to."""
        try:
            return self._attempt(job)
        except Exception as err:
            return Step(host=job.host, result=FetchFailed(UNEXPECTED, f"{type(err).__name__}: {err}",
                                                          job.sources[job.index][1]
                                                          if job.index < len(job.sources) else ""))

    def expire(self, job: Job) -> Step:
        """The job's time ran out while it waited for its host: move on without a request."""
        try:
            source, url = job.sources[job.index]
            if job.attempt:  # retrying: keep the reason it was retrying for
                reason, detail, _ = job.last
                detail += " (its share of --fetch_deadline_s ran out waiting for the host)"
            else:
                reason, detail = TIMEOUT, f"{url}: waited for the host past --fetch_deadline_s"
            return self._next_source(job, reason, detail, url, Step())
        except Exception as err:
            return Step(result=FetchFailed(UNEXPECTED, f"{type(err).__name__}: {err}"))

    def _attempt(self, job: Job) -> Step:
        c = self.config
        source, url = job.sources[job.index]
        now = self._clock()
        if job.deadline is None:
            job.deadline = now + c.deadline_s
        if job.source_end is None:
            job.source_end = now + (job.deadline - now) / (len(job.sources) - job.index)
        step = Step(host=job.host, sent_at=now)
        out = self._http.get(url, job.source_end)
        job.attempt += 1
        step.throttled = out.throttled
        step.answered = bool(out.status) and not out.throttled and out.status < 500
        if not out.reason:
            reason, detail, digest = verify(out.data, source, job.image, self._placeholders)
            if not reason:
                self.cache.write_image(self._folder(source), job.image.image_id, out.data)
                step.result = Fetched(out.data, source, url, digest)
                return step
            out = fetch_http.Outcome(reason, detail, status=out.status,
                                     retry=reason == TRUNCATED)
        wait = out.wait_s if out.wait_s is not None else self._backoff(url, job.attempt - 1)
        if out.pause:
            step.pause_s = wait
        detail = out.detail
        if out.retry:
            if job.attempt < c.fetch_attempts and self._clock() + wait < job.source_end:
                job.last = (out.reason, detail, url)
                self.count("retries")
                step.next_host, step.wait_s = job.host, wait
                return step
            detail += (f" after {job.attempt} attempts" if job.attempt >= c.fetch_attempts
                       else " (no time left for a retry within --fetch_deadline_s)")
        if failures.reason(STAGE_FETCH, out.reason).final:
            self.cache.write_failure(self._folder(source), job.image.image_id, {
                "reason": out.reason, "detail": detail, "url": url,
                "settings": self._settings(out.reason, job.image, source)})
        return self._next_source(job, out.reason, detail, url, step)

    def _next_source(self, job: Job, reason: str, detail: str, url: str, step: Step) -> Step:
        job.tried.append(f"{job.sources[job.index][0]}: {reason} ({detail})")
        job.last = (reason, detail, url)
        job.index, job.attempt, job.source_end = job.index + 1, 0, None
        if job.index < len(job.sources):
            self.count("fallbacks")
        nxt = self._resolve(job)
        if isinstance(nxt, Job):
            step.next_host = nxt.host
        else:
            step.result = nxt
        return step

    def _resolve(self, job: Job) -> Job | Fetched | FetchFailed:
        """Skip the sources the cache settles; stop at the first it does not."""
        image_id = job.image.image_id
        while job.index < len(job.sources):
            source, url = job.sources[job.index]
            data = self.cache.read_image(self._folder(source), image_id)
            if data is not None:
                reason, _, digest = verify(data, source, job.image, self._placeholders,
                                           self.config.max_image_bytes)
                if not reason:
                    self.count("cache_hits")
                    return Fetched(data, source, url, digest)
                self.count("cache_stale")  # the row or the settings changed: ask again
            else:
                record = self.cache.read_failure(self._folder(source), image_id)
                if record is not None and self._still_holds(record, job.image, source):
                    self.count("cache_hits")
                    job.tried.append(f"{source}: {record['reason']} ({record.get('detail', '')}, cached)")
                    job.last = (record["reason"], record.get("detail", ""), url)
                    job.index += 1
                    continue
                if record is not None:
                    self.count("cache_stale")
            job.host = netsafety.host_key(url)
            return job
        if not job.tried:
            return FetchFailed(*job.last)
        return FetchFailed(job.last[0], "; ".join(job.tried), job.last[2])

    def _folder(self, source: str) -> str:
        return self._folders[source]

    def _settings(self, reason: str, image: ImageRow, source: str) -> dict:
        """The values of the settings a final `reason` depends on (the table says which).
        The flags that make a mirror's URLs need not be among them: they name the cache
        folder (`cache_folder`)."""
        names = list(failures.reason(STAGE_FETCH, reason).settings)
        values = {}
        for name in names:
            obj, attr = (image, name[4:]) if name.startswith("row.") else (self.config, name)
            value = getattr(obj, attr)
            values[name] = sorted(value) if isinstance(value, (tuple, list, set)) else value
        return json.loads(json.dumps(values))

    def _still_holds(self, record: dict, image: ImageRow, source: str) -> bool:
        try:
            entry = failures.reason(STAGE_FETCH, record.get("reason", ""))
        except KeyError:
            return False
        return entry.final and record.get("settings") == self._settings(entry.name, image, source)

    def _backoff(self, url: str, attempt: int) -> float:
        jitter = int(hashlib.sha256(f"{url}#{attempt}".encode()).hexdigest()[:8], 16) / 2**32
        return min(self.config.max_backoff_s, self.config.backoff_s * 2**attempt) * (0.5 + 0.5 * jitter)


remove_orphaned_temp_files = fetch_cache.remove_orphaned_temp_files
