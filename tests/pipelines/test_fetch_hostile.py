"""Hostile answers and URLs: nothing a server sends can end a build or hide a box.

- a property test throws random statuses, headers (Content-Length, Content-Encoding,
  Retry-After, Location, Content-Type) and bodies at the fetcher through a real server;
- real builds against hostile answers served from 127.0.0.1 exit 0, COMPLETED, with every
  box one example or one failure, and so do their reruns;
- URLs that parsers read differently, and IPv6 addresses that carry private IPv4 ones.
"""
import dataclasses
import email.utils
import gzip
import http.server
import io
import itertools
import json
import socketserver
import threading

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pipelines import build, fetch, jpegscans, netsafety, write
from pipelines.demo import photos
from pipelines.fetch_window import Window
from schemas import failures
from schemas.records import STAGE_FETCH, ImageRow
from tests.conftest import build_argv, image_rows

FETCH_REASONS = set(failures.names(STAGE_FETCH))
JPEG = photos.render_photo("hostile", [], (64, 48))


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers GET /h/<id>.jpg with the next scripted raw answer for <id> (the last one
    repeats), then closes the connection: status line, headers and body exactly as drawn."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        image_id = self.path.rsplit("/", 1)[-1].split(".")[0]
        with self.server.lock:
            script = self.server.scripts.get(image_id) or [(404, [], b"")]
            n = self.server.served.get(image_id, 0)
            self.server.served[image_id] = n + 1
        status, headers, body = script[min(n, len(script) - 1)]
        head = f"HTTP/1.1 {status} Whatever\r\n".encode()
        for name, value in headers:
            head += name.encode() + b": " + value.encode("latin-1", "replace") + b"\r\n"
        try:
            self.wfile.write(head + b"\r\n" + body)
        except OSError:
            pass
        self.close_connection = True


class _ScriptServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Scripted)
        self.scripts, self.served, self.lock = {}, {}, threading.Lock()


@pytest.fixture(scope="module")
def script_server():
    srv = _ScriptServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"),
                      max_size=30)


def _mostly(common, *others):
    """Half the time `common`, else one of `others` (each a strategy)."""
    return st.integers(0, 2 * len(others) - 1).flatmap(
        lambda k: common if k < len(others) else others[k - len(others)])


statuses = _mostly(st.just(200), st.sampled_from([201, 204, 206, 301, 302, 303, 307, 308, 304, 400,
                                                  403, 404, 410, 418, 429, 500, 502, 503, 504,
                                                  599, 600, 999, 100, 101]),
                   st.integers(100, 999))
BODIES = {"jpeg": JPEG, "half_jpeg": JPEG[: len(JPEG) // 2], "gzipped_jpeg": gzip.compress(JPEG),
          "html": b"<!doctype html><p>no</p>", "empty": b""}
# bodies are drawn by name (or as a few random bytes), so a failing example prints short
bodies = _mostly(st.just("jpeg"), st.sampled_from(sorted(BODIES)), st.binary(max_size=64))


@st.composite
def answer(draw, port: int):
    status, body = draw(statuses), draw(bodies)
    body = BODIES[body] if isinstance(body, str) else body
    headers = []
    length = draw(_mostly(st.sampled_from(["right", "none"]),
                          st.sampled_from(["abc", "twice", "more", "less", "minus", "huge", "text"])))
    value = {"right": str(len(body)), "abc": "abc", "twice": f"{len(body)}, {len(body)}",
             "more": str(len(body) + 10), "less": str(max(0, len(body) - 10)), "minus": "-1",
             "huge": "99999999999999999999", "text": draw(header_text)}.get(length)
    if value is not None:
        headers.append(("Content-Length", value))
    for name, choices in (
            ("Content-Encoding", st.one_of(st.sampled_from(["gzip", "deflate", "br", "identity",
                                                            "x-garbage", "gzip, gzip"]), header_text)),
            ("Retry-After", st.one_of(st.sampled_from(["nan", "-1", "0", "1", "1e9", "inf",
                                                       "99999999999",
                                                       email.utils.formatdate(usegmt=True)]),
                                      header_text)),
            ("Location", st.one_of(st.sampled_from([
                "/h/0123456789abcdef.jpg", f"http://127.0.0.1:{port}/h/0000000000000000.jpg",
                "http://[::1", "javascript:alert(1)", "", "//127.0.0.1:1/x", "ftp://x/y",
                "/images/en-us/photo_unavailable.png", "http://no-such-host.invalid/x"]),
                header_text)),
            ("Content-Type", st.one_of(st.sampled_from(["image/jpeg", "text/html"]), header_text))):
        if draw(st.integers(0, 2)) == 0:
            headers.append((name, draw(choices)))
    return status, headers, body


class _Shown(list):
    """A script that prints its bodies by name: hypothesis shows failing examples."""

    def __repr__(self):
        names = {v: k for k, v in BODIES.items()}
        return repr([(s, h, names.get(b, b)) for s, h, b in self])


_ids = itertools.count(1)


def _row(image_id: str, port: int) -> ImageRow:
    return ImageRow(image_id, "train", f"http://127.0.0.1:{port}/h/{image_id}.jpg", "", "", "",
                    "", "", None, "", "", 0)


def _plain(script) -> bool:
    """One ordinary answer: 200, the JPEG, an honest or absent length, no encoding."""
    if len(script) != 1:
        return False
    (status, headers, body), = script
    names = {n for n, _ in headers}
    lengths = [v for n, v in headers if n == "Content-Length"]
    return (status == 200 and body == JPEG and lengths in ([], [str(len(JPEG))])
            and not names & {"Content-Encoding", "Location"})


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_any_answer_becomes_a_photo_or_a_failure_reason(script_server, tmp_path_factory, data):
    port = script_server.server_address[1]
    script = data.draw(st.lists(answer(port), min_size=1, max_size=3).map(_Shown), label="answers")
    config = fetch.FetchConfig(image_source=("original",), allow_private_network=True,
                               cache_dir=str(tmp_path_factory.getbasetemp() / "hostile_cache"),
                               read_timeout_s=0.5, connect_timeout_s=0.5, deadline_s=2.0,
                               fetch_attempts=2, backoff_s=0.01, max_backoff_s=0.05,
                               max_image_bytes=1 << 20, max_redirects=3)
    sync_id, window_id = (f"{next(_ids):016x}" for _ in range(2))
    with script_server.lock:
        script_server.scripts[sync_id] = script_server.scripts[window_id] = script
    fetcher = fetch.Fetcher(config, sleep=lambda s: None)
    try:
        got = fetcher.fetch(_row(sync_id, port))
    except fetch.FetchFailed as err:
        assert err.reason in FETCH_REASONS, err
        assert not _plain(script), err
    else:
        assert fetch.looks_like_image(got.data) and len(got.data) <= config.max_image_bytes
    window = Window(fetcher, 4, 4)
    try:
        assert window.offer("key", _row(window_id, port))
        results = window.take() + list(window.drain())
    finally:
        window.close()
        fetcher.close()
    assert [key for key, _ in results] == ["key"]
    result = results[0][1]
    assert isinstance(result, fetch.Fetched) or result.reason in FETCH_REASONS
    if _plain(script):
        assert isinstance(result, fetch.Fetched)


def test_a_negative_chunk_size_is_a_bad_response(script_server, tmp_path):
    """`-10` parses as a hexadecimal chunk size, then cannot be read: a malformed answer
    (bad_response), not an `unexpected` ValueError."""
    port = script_server.server_address[1]
    image_id = f"{next(_ids):016x}"
    with script_server.lock:
        script_server.scripts[image_id] = [
            (200, [("Transfer-Encoding", "chunked")], b"-10\r\n" + JPEG[:16] + b"\r\n0\r\n\r\n")]
    failed = _failure(fetch.FetchConfig(
        image_source=("original",), allow_private_network=True, cache_dir=str(tmp_path),
        read_timeout_s=0.5, fetch_attempts=1), _row(image_id, port))
    assert failed.reason == "bad_response" and "malformed body framing" in str(failed)


def _failure(config: fetch.FetchConfig, row: ImageRow) -> fetch.FetchFailed:
    """The failure fetching `row` ends in (the test fails if it is fetched)."""
    fetcher = fetch.Fetcher(config)
    try:
        with pytest.raises(fetch.FetchFailed) as failed:
            fetcher.fetch(row)
    finally:
        fetcher.close()
    return failed.value


def test_a_content_length_that_lies_low_is_truncated_and_never_cached(script_server, tmp_path):
    """A host that declares 100 bytes fewer than it sends, for a source with no size or
    MD5 in the row: the JPEG stops before its end-of-image marker, so the photo fails as
    `truncated` after its attempts, nothing is cached, and the next source serves it."""
    port = script_server.server_address[1]
    liar, honest = (f"{next(_ids):016x}" for _ in range(2))
    with script_server.lock:
        script_server.scripts[liar] = [(200, [("Content-Length", str(len(JPEG) - 100))], JPEG)]
        script_server.scripts[honest] = [(200, [("Content-Length", str(len(JPEG)))], JPEG)]
    config = fetch.FetchConfig(image_source=("original", "template"), allow_private_network=True,
                               cache_dir=str(tmp_path), read_timeout_s=0.5, fetch_attempts=2,
                               backoff_s=0.01,
                               url_template=f"http://127.0.0.1:{port}/h/{honest}.jpg?{{image_id}}")
    fetcher = fetch.Fetcher(config)
    try:
        got = fetcher.fetch(_row(liar, port))
    finally:
        fetcher.close()
    assert got.source == "template" and got.data == JPEG
    assert script_server.served[liar] == 2  # retried: a short body may be the network's
    assert not list(tmp_path.glob("original/*/*"))  # neither bytes nor a failure cached
    failed = _failure(dataclasses.replace(config, image_source=("original",)), _row(liar, port))
    assert failed.reason == "truncated" and "end-of-image marker" in str(failed)


def test_a_jpeg_reaches_its_end_only_past_its_first_scan():
    data = JPEG
    assert jpegscans.reaches_end(data)
    assert not jpegscans.reaches_end(data[:len(data) // 2])
    assert not jpegscans.reaches_end(data[:-2])  # the end-of-image marker itself
    assert not jpegscans.reaches_end(data[:20])  # inside the header
    assert jpegscans.reaches_end(data + b"\x00ftypmp42" * 100)  # a "motion photo" trailer
    # an EXIF thumbnail (its own scan and end-of-image, inside an APP1 segment) before the
    # frame does not make a cut photo look whole
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (90, 30, 10)).save(out, "JPEG")
    thumbnail = out.getvalue()
    app1 = b"\xff\xe1" + (2 + 6 + len(thumbnail)).to_bytes(2, "big") + b"Exif\x00\x00" + thumbnail
    with_thumbnail = data[:2] + app1 + data[2:]
    assert jpegscans.reaches_end(with_thumbnail)
    assert not jpegscans.reaches_end(with_thumbnail[:len(with_thumbnail) - 300])


# ------------------------------------------------------------------ real builds

HOSTILE = {"length_abc": None, "length_list": None, "retry_after_nan": None,
           "retry_after_date": None, "bad_gzip": "bad_response", "unavailable": "server_error",
           "trickle": "timeout"}


def _build(files_, out, cache) -> tuple[dict, list, pd.DataFrame]:
    assert build.main(build_argv(files_, out, cache, "--fetch_deadline_s", "3",
                                 "--no_previews", "--overwrite", "--quiet")) == 0
    dataset = out / "hamburger_sandwich" / "1.0.0"
    assert (dataset / write.COMPLETED_FILE).exists()
    report = json.loads((dataset / write.REPORT_FILE).read_text())
    fails = [json.loads(line) for line in open(dataset / write.FAILURES_FILE)]
    return report, fails, pd.read_parquet(dataset / write.MANIFEST_FILE)


def test_builds_survive_hostile_answers_and_so_do_their_reruns(photo_site, tmp_path):
    """Bad lengths, a gzip header over plain bytes, Retry-After nan and an HTTP-date, a
    503 outage and a body that trickles forever, served during a real build: it exits 0,
    COMPLETED, every box is one example or one failure; a rerun (nothing transient was
    cached) asks again and ends the same way."""
    files_, srv = photo_site
    images = image_rows(files_.images_csv)
    faults = {image.image_id: kind for image, kind in zip(images, HOSTILE)}
    srv.reset(faults=faults, trickle_s=0.2)
    boxes = pd.read_csv(files_.bbox_csv)
    selected = len(boxes[boxes.LabelName.isin(["/m/0cdn1", "/m/0l515"])])
    first = None
    for run in range(2):
        report, fails, manifest = _build(files_, tmp_path / "out", tmp_path / "cache")
        assert report["invariant"]["lost"] == 0
        box_failures = [f for f in fails if f["mid"]]
        assert len(manifest) + len(box_failures) == selected
        keys = list(zip(manifest.image_id, manifest.box_index)) + [
            (f["image_id"], f["box_index"]) for f in box_failures if f["stage"] != "join"]
        assert len(keys) == len(set(keys))
        got = {f["image_id"]: f["reason"] for f in fails if f["stage"] == "fetch"}
        assert got == {i: reason for i, kind in faults.items() if (reason := HOSTILE[kind])}
        counters = report["metrics"]["counters"]
        for reason in ("bad_response", "server_error", "timeout"):
            assert counters[f"fetch/failed_{reason}"] == 1
        # the host controls reach the report: the trickle was cut, the 503s counted, and on
        # the first run two 429s backed the host off (the rerun takes those photos from cache)
        assert counters["fetch/deadline_cuts"] == 1 and counters["fetch/answers_5xx"] == 2
        if run == 0:
            assert counters["fetch/answers_429"] == 2 and counters["fetch/host_backoffs"] >= 1
        else:
            assert counters["fetch/requests"] == 4  # only the 503, gzip and trickle again
        assert set(manifest.image_id) >= {i for i, k in faults.items() if HOSTILE[k] is None}
        first = first or got
        assert got == first
    # the rerun asked the hosts of the three transient failures again
    assert srv.requests[f"/original/{images[5].image_id}.jpg"] == 4  # 503: 2 attempts x 2 runs


def test_an_exception_nobody_foresaw_costs_one_photo_not_the_build(photo_site, tmp_path,
                                                                monkeypatch):
    """Whatever raises while one photo is fetched becomes `unexpected` records for its
    boxes, with the exception's type in `detail`; the build completes."""
    files_, srv = photo_site
    victim = image_rows(files_.images_csv)[0].image_id
    real = fetch.verify

    def verify(data, source, image, *args):
        if image.image_id == victim:
            raise RuntimeError("a bug in the fetcher")
        return real(data, source, image, *args)

    monkeypatch.setattr(fetch, "verify", verify)
    report, fails, manifest = _build(files_, tmp_path / "out", tmp_path / "cache")
    mine = [f for f in fails if f["image_id"] == victim]
    assert mine and {(f["stage"], f["reason"]) for f in mine} == {("fetch", "unexpected")}
    assert all("RuntimeError" in f["detail"] for f in mine)
    assert report["metrics"]["counters"]["fetch/failed_unexpected"] == 1
    assert victim not in set(manifest.image_id) and report["invariant"]["lost"] == 0


# ------------------------------------------------------------------ URLs

def test_urls_are_checked_as_the_request_reads_them(photo_site, tmp_path, monkeypatch):
    r"""urlsplit reads `http://127.0.0.1:P\@8.8.8.8/` as host 8.8.8.8; urllib3 (and so the
    request) as 127.0.0.1. The check must use the request's reading, even with the
    connect-time check out of the way."""
    files_, srv = photo_site
    port = srv.server_address[1]
    url = f"http://127.0.0.1:{port}\\@8.8.8.8/original/x.jpg"
    import urllib.parse
    assert urllib.parse.urlsplit(url).hostname == "8.8.8.8"  # the disagreement
    with pytest.raises(netsafety.BlockedURL, match="127.0.0.1"):
        netsafety.check_url(url)
    monkeypatch.setattr(netsafety, "_check_peer", lambda sock, allow_private: None)
    image = ImageRow("0123456789abcdef", "train", url, "", "", "", "", "", None, "", "", 0)
    config = fetch.FetchConfig(image_source=("original",), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(fetch.FetchFailed) as err:
        fetch.Fetcher(config).fetch(image)
    assert err.value.reason == fetch.BLOCKED_URL and "127.0.0.1" in err.value.detail
    assert srv.total_requests() == 0


@pytest.mark.parametrize("host, link_local", [
    ("2002:a9fe:a9fe::", True),               # 6to4 of 169.254.169.254, the metadata service
    ("2002:7f00:1::1", False),                # 6to4 of 127.0.0.1
    ("2002:c0a8:101::", False),               # 6to4 of 192.168.1.1
    ("64:ff9b::a9fe:a9fe", True),             # NAT64 of 169.254.169.254
    ("64:ff9b:1::a00:1", False),              # local-use NAT64
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ("::ffff:169.254.169.254", True),         # IPv4-mapped
    ("::127.0.0.1", False),                   # IPv4-compatible (deprecated)
])
def test_ipv6_addresses_that_carry_private_ipv4_are_refused(host, link_local):
    """Refused by default; --allow_private_network lets them through, except those that
    carry a link-local address (the metadata service), which stay refused."""
    with pytest.raises(netsafety.BlockedURL):
        netsafety.check_url(f"http://[{host}]/x.jpg")
    if link_local:
        with pytest.raises(netsafety.BlockedURL, match="link-local"):
            netsafety.check_url(f"http://[{host}]/x.jpg", allow_private=True)
    else:
        netsafety.check_url(f"http://[{host}]/x.jpg", allow_private=True)


def test_6to4_of_a_public_address_is_allowed():
    assert netsafety.check_url("http://[2002:808:808::1]/x.jpg") == "http://[2002:808:808::1]/x.jpg"
    assert [str(a) for a in netsafety.embedded_ipv4(__import__("ipaddress").ip_address(
        "2002:a9fe:a9fe::"))] == ["169.254.169.254"]
