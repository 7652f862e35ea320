"""The one table of failure reasons: what each means, whether to retry it, whether to cache it.

Every failure record (schemas/records.py `Failure`) carries a `stage` and a `reason`. This
table says, per (stage, reason), for every stage (scan, join, fetch, crop):

- `retryable`: the same request may succeed if made again soon (a timeout, a 5xx, a 429),
  so the fetcher retries it within --fetch_attempts and the deadline;
- `final`: the answer is settled for these settings, so the download cache may remember it
  and a rerun need not ask again (a 404, a checksum mismatch). A reason that is neither
  (a 5xx that outlasted the retries) is reported but never cached: the next run asks again;
- `settings`: what a final answer depends on besides the URL. A cached failure records
  their values and is ignored when any of them changes (a `blocked_url` cached without
  --allow_private_network is asked again with it). Names are FetchConfig fields, or
  `row.<field>` for a field of the photo's image row;
- `meaning` and `action`: one line each, for people. README's troubleshooting table is
  generated from them (`python -m schemas.failures` prints it; a test keeps them equal).

Every stage's reasons are here, and only here. A module that raises one declares it with
`declared(stage, name)`, which checks the name against this table when the module is
imported, so a reason nobody declared cannot be written (pipelines/scan_rows.py, scan_stage.py,
join.py for the plan; fetch_http.py; crop.py). Only the fetch stage retries or caches.

    python -m schemas.failures           # the README troubleshooting rows
"""
from __future__ import annotations

import dataclasses
import sys

from schemas.records import STAGE_CROP, STAGE_FETCH, STAGE_JOIN, STAGE_SCAN_BOXES


@dataclasses.dataclass(frozen=True)
class Reason:
    """One failure reason of one stage (see the module docstring for the fields)."""

    stage: str
    name: str
    retryable: bool
    final: bool
    meaning: str
    action: str
    settings: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """How reports name it: `stage/reason`, e.g. `fetch/not_found`."""
        return f"{self.stage}/{self.name}"


_PLAN = (
    Reason(STAGE_SCAN_BOXES, "bad_row", False, False,
           "a box-table line that does not parse into the table's columns (wrong field count, "
           "a number that is not one or does not fit, bytes that are not UTF-8); `detail` "
           "quotes it",
           "check that the file is the box table it claims to be; the other lines are kept"),
    Reason(STAGE_SCAN_BOXES, "bad_box", False, False,
           "NaN, out-of-range or inverted coordinates, or an Is* flag other than -1, 0, 1",
           "nothing: the row is wrong in the table; `detail` quotes it"),
    Reason(STAGE_SCAN_BOXES, "bad_image_id", False, False,
           "the box's ImageID is not 16 lowercase hex digits, so it may not name a file",
           "check the table; such a row can never be fetched"),
    Reason(STAGE_JOIN, "no_image_row", False, False,
           "the box's ImageID is missing from the image table",
           "check you paired the right box and image tables (split and version)"),
    Reason(STAGE_JOIN, "bad_image_row", False, False,
           "the photo's image row is unusable: a Rotation not 0/90/180/270, a size that is "
           "not a number, a record with the wrong field count; `detail` says which",
           "nothing: the row is wrong in the table"),
    Reason(STAGE_JOIN, "duplicate_box", False, False,
           "an identical box of the same class on the same photo (one example is kept)",
           "nothing: it would be the same pixels twice"),
)

_CROP = (
    Reason(STAGE_CROP, "too_small", False, False,
           "the box is under `--min_crop_pixels` in the photo",
           "lower `--min_crop_pixels`, or accept fewer tiny crops"),
    Reason(STAGE_CROP, "not_an_image", False, False,
           "the photo does not decode (corrupt, truncated, an unknown format)",
           "nothing; another source may serve a better copy"),
    Reason(STAGE_CROP, "too_large", False, False,
           "over the decompression-bomb pixel limit, `--max_jpeg_scans` or "
           "`--max_jpeg_megasamples`",
           "raise the limits only for photos you trust"),
    Reason(STAGE_CROP, "unexpected", False, False,
           "an error the crop stage has no reason for; `detail` names the exception",
           "report it with the failure record; the rest of the build is unaffected"),
)

_FETCH = (
    Reason(STAGE_FETCH, "not_found", False, True,
           "the photo is gone from that source (HTTP 404 or 410)",
           "add a fallback source: `--image_source cvdf original`"),
    Reason(STAGE_FETCH, "placeholder", False, True,
           "Flickr answered with its \"photo unavailable\" image",
           "same; the CVDF mirror keeps a copy of every boxable photo",
           ("placeholder_sha256",)),
    Reason(STAGE_FETCH, "checksum", False, True,
           "the original's size or MD5 differs from the image table's",
           "usually a re-encoded copy: fall back to `cvdf`, or drop `original`",
           ("row.original_size", "row.original_md5")),
    Reason(STAGE_FETCH, "http_error", False, True,
           "the host refused the request (another 4xx, or a 3xx without a target)",
           "check the URL in failures.jsonl; nothing to retry"),
    Reason(STAGE_FETCH, "server_error", True, False,
           "the host answered 5xx to every attempt",
           "rerun later: it is not cached, so the next run asks again"),
    Reason(STAGE_FETCH, "rate_limited", True, False,
           "the host answered 429 to every attempt, or paused us past the deadline",
           "rerun later, or lower `--fetch_per_host`; raise `--fetch_deadline_s`"),
    Reason(STAGE_FETCH, "timeout", True, False,
           "no answer within `--fetch_timeout_s`, or the photo took over "
           "`--fetch_deadline_s` (a trickling body)",
           "rerun: settled photos come from the cache; raise the timeouts for slow hosts"),
    Reason(STAGE_FETCH, "connection_error", True, False,
           "the connection failed or was reset (DNS, refused, dropped)",
           "check the network, then rerun"),
    Reason(STAGE_FETCH, "truncated", True, False,
           "the body ended before its Content-Length, or (from a source with no checksum) "
           "a JPEG stops before its end-of-image marker, on every attempt",
           "rerun; a host that always truncates needs a fallback source"),
    Reason(STAGE_FETCH, "bad_response", False, False,
           "the answer broke HTTP: an undecodable Content-Encoding, a malformed header",
           "nothing to tune; a fallback source may serve the photo"),
    Reason(STAGE_FETCH, "too_large", False, True,
           "the body is over `--max_image_bytes`",
           "raise the cap if your photos are that large",
           ("max_image_bytes",)),
    Reason(STAGE_FETCH, "redirect_loop", False, True,
           "more redirects than the fetcher follows (5)",
           "nothing; the host is misconfigured",
           ("max_redirects",)),
    Reason(STAGE_FETCH, "blocked_url", False, True,
           "the URL is not http(s), is malformed, or points at a private address",
           "expected for hostile rows; `--allow_private_network` only for local mirrors",
           ("allow_private_network",)),
    Reason(STAGE_FETCH, "not_an_image", False, True,
           "the body is not an image file (HTML, text, garbage)",
           "nothing; a fallback source may serve the photo"),
    # decided before any request, from the row alone: nothing to cache
    Reason(STAGE_FETCH, "no_url", False, False,
           "no source in `--image_source` has a URL for this photo",
           "add `cvdf` or a `--url_template` source"),
    Reason(STAGE_FETCH, "bad_image_id", False, False,
           "the ImageID is not 16 hex digits, so it may not name a cache file",
           "check the image table"),
    Reason(STAGE_FETCH, "unexpected", False, False,
           "an error the fetcher has no reason for; `detail` names the exception",
           "report it with the failure record; the rest of the build is unaffected"),
)

TABLE: dict[tuple[str, str], Reason] = {(r.stage, r.name): r for r in _PLAN + _FETCH + _CROP}


def reason(stage: str, name: str) -> Reason:
    """The table's entry; KeyError for a reason nobody declared."""
    return TABLE[(stage, name)]


def declared(stage: str, name: str) -> str:
    """A reason's name, checked against the table when the module that uses it loads."""
    return reason(stage, name).name


def names(stage: str) -> tuple[str, ...]:
    """A stage's reason names, in table order."""
    return tuple(r.name for r in TABLE.values() if r.stage == stage)


def troubleshooting_rows() -> list[str]:
    """README's troubleshooting table rows, one per reason, in table order."""
    def yes(flag: bool) -> str:
        return "yes" if flag else "no"
    return [f"| `{r.key}` | {r.meaning} | {yes(r.retryable)} | {yes(r.final)} | {r.action} |"
            for r in TABLE.values()]


TROUBLESHOOTING_HEADER = ("| failure | what it means | retried | cached | what to do |\n"
                          "|---|---|---|---|---|")


def troubleshooting_table() -> str:
    return "\n".join([TROUBLESHOOTING_HEADER, *troubleshooting_rows()])


if __name__ == "__main__":
    print(troubleshooting_table())
    sys.exit(0)
