"""Deadlines and Retry-After: trickling bodies are cut, slow sources hand over, headers parse."""
import datetime
import email.utils
import ipaddress
import socketserver
import ssl
import threading
import time

import pytest

from pipelines import fetch, fetch_http
from pipelines.demo import photos
from schemas.records import ImageRow
from tests.conftest import image_rows
from tests.conftest import fetch_test_config

JPEG = photos.render_photo("deadline", [], (64, 48))


@pytest.fixture
def site(photo_site):
    files, srv = photo_site
    srv.reset(trickle_s=0.1)
    return files, srv, image_rows(files.images_csv)


def test_a_trickling_body_is_cut_at_the_deadline(site, tmp_path):
    """A byte every 0.1 s never trips the 0.5 s read timeout; the whole photo would take
    hours. The 1 s deadline cuts it, with reason timeout, and it is not cached."""
    files, srv, images = site
    image = images[0]
    srv.reset(faults={image.image_id: "trickle"}, trickle_s=0.1)
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, deadline_s=1.0, fetch_attempts=3))
    start = time.monotonic()
    with pytest.raises(fetch.FetchFailed) as err:
        fetcher.fetch(image)
    assert time.monotonic() - start < 30  # generous: the trickle alone would take hours
    assert err.value.reason == fetch.TIMEOUT
    assert "cut at the deadline" in err.value.detail
    assert fetcher.stats["deadline_cuts"] == 1
    assert srv.total_requests() == 1  # no time was left for a retry
    srv.reset()
    assert fetch.Fetcher(fetch_test_config(tmp_path)).fetch(image).source == "original"  # not cached


def test_a_trickling_source_hands_over_to_the_next_within_the_deadline(site, tmp_path):
    files, srv, images = site
    image = images[1]
    srv.reset(faults={image.image_id: "trickle"}, trickle_s=0.1)
    config = fetch_test_config(tmp_path, deadline_s=4.0, image_source=("original", "cvdf"),
                     cvdf_base_url=f"{srv.base_url}/cvdf")
    fetcher = fetch.Fetcher(config)
    start = time.monotonic()
    got = fetcher.fetch(image)
    assert time.monotonic() - start < 30
    # the original may use half the deadline, so the mirror still had the other half
    assert (got.source, fetcher.stats["deadline_cuts"], fetcher.stats["fallbacks"]) == ("cvdf", 1, 1)
    assert got.url == f"{srv.base_url}/cvdf/{image.subset}/{image.image_id}.jpg"


def test_a_source_that_times_out_falls_back_to_the_next(site, tmp_path):
    files, srv, images = site
    image = images[2]
    srv.reset(faults={image.image_id: "hang"})  # 2 s stall, past the 0.5 s read timeout
    config = fetch_test_config(tmp_path, image_source=("original", "cvdf"), cvdf_base_url=srv.base_url)
    got = fetch.Fetcher(config).fetch(image)
    assert got.source == "cvdf"
    assert srv.requests[f"/original/{image.image_id}.jpg"] == 2  # both attempts timed out


def test_the_deadline_bounds_retries_too(site, tmp_path):
    """A host that answers 503 with a long Retry-After: no retry is scheduled past the
    photo's deadline, so the photo fails at once instead of sleeping."""
    files, srv, images = site
    srv.reset(outage=True)
    waits = []
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, deadline_s=3.0, backoff_s=30.0, fetch_attempts=4),
                            sleep=waits.append)  # the first backoff, 15-30 s, is past it
    with pytest.raises(fetch.FetchFailed) as err:
        fetcher.fetch(images[3])
    assert err.value.reason == fetch.SERVER_ERROR
    assert "no time left" in err.value.detail and waits == []
    assert srv.total_requests() == 1


NOW = 1_800_000_000.0  # a fixed "now" for the parser


@pytest.mark.parametrize("value, expected", [
    ("1", 1.0), ("0", 0.0), (" 7 ", 7.0), ("2.5", 2.5), ("120", 30.0),   # capped at 30
    ("99999999999", 30.0),
    (email.utils.formatdate(NOW + 12, usegmt=True), 12.0),               # an HTTP-date
    (email.utils.formatdate(NOW - 60, usegmt=True), 0.0),                # in the past
    (email.utils.formatdate(NOW + 86400 * 365, usegmt=True), 30.0),      # far future: capped
    ("nan", None), ("NaN", None), ("inf", None), ("-1", None), ("-0.5", None), ("1e9", None),
    ("", None), ("soon", None), ("Wed, 99 Foo 2015 07:28:00 GMT", None), ("1, 2", None),
    ("\x00\xff", None), (None, None),
])
def test_retry_after_parses_seconds_and_dates_and_ignores_nonsense(value, expected):
    assert fetch_http.retry_after_s(value, NOW, 30.0) == expected


@pytest.mark.parametrize("value, expected", [
    ("123", 123), ("5, 5", 5), (" 7 ", 7), ("abc", None), ("5, 6", None), ("-1", None),
    ("", None), ("1e3", None), ("+5", None), ("5_000", None), ("99999999999999999999", 99999999999999999999),
])
def test_content_length_parses_leniently(value, expected):
    assert fetch_http.declared_length({"Content-Length": value}) == expected


class _Framed(socketserver.BaseRequestHandler):
    """Raw answers framed as named by the path (/<framing>/<id>.jpg), trickled a byte
    every 0.1 s after the first 100 bytes: the ways an answer ends that http.client
    handles differently, and a chunked body that also declares a Content-Length."""

    def handle(self):
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            request += chunk
        framing = request.split(b" ")[1].decode().split("/")[1]
        heads = {"close": b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: %d\r\n\r\n",
                 "http10": b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n",
                 "unframed": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"}
        try:
            if framing == "chunked":  # a Content-Length that Transfer-Encoding overrides
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: "
                                     b"chunked\r\nConnection: close\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                                     % (len(JPEG), JPEG))
                return
            if framing == "headers":  # the status line, then headers that never end
                head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 600
            else:
                head = (heads[framing] % len(JPEG) if b"%d" in heads[framing]
                        else heads[framing]) + JPEG
            self.request.sendall(head[:100])
            for i in range(100, len(head)):
                self.request.sendall(head[i:i + 1])
                time.sleep(0.1)
        except OSError:  # the client cut us off: what the test wants
            pass


class _FramedServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False


@pytest.fixture
def framed_server():
    srv = _FramedServer(("127.0.0.1", 0), _Framed)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _row(url: str) -> ImageRow:
    return ImageRow("0123456789abcdef", "train", url, "", "", "", "", "", None, "", "", 0)


@pytest.mark.parametrize("framing", ["close", "http10", "unframed", "headers"])
def test_the_deadline_holds_however_the_answer_is_framed(framed_server, tmp_path, framing):
    """With `Connection: close`, HTTP/1.0 or no length, http.client hands the socket to
    the response; a trickle there, or in the headers, must still be cut at the deadline
    (the whole answer would take minutes) as a timeout, never cached: a cut while the
    headers arrive once looked like a complete empty answer, cached as not_an_image."""
    fetcher = fetch.Fetcher(fetch_test_config(tmp_path, deadline_s=1.0, fetch_attempts=1))
    start = time.monotonic()
    with pytest.raises(fetch.FetchFailed) as err:
        fetcher.fetch(_row(f"{framed_server}/{framing}/0123456789abcdef.jpg"))
    assert time.monotonic() - start < 20  # generous: the trickle alone takes minutes
    assert err.value.reason == fetch.TIMEOUT, err.value.detail
    assert "cut at the deadline" in err.value.detail
    # Not cached: a rerun asks the server again (and is cut again) rather than failing
    # from the cache without a request.
    with pytest.raises(fetch.FetchFailed) as again:
        fetch.Fetcher(fetch_test_config(tmp_path, deadline_s=0.5, fetch_attempts=1)).fetch(
            _row(f"{framed_server}/{framing}/0123456789abcdef.jpg"))
    assert again.value.reason == fetch.TIMEOUT and "cached" not in again.value.detail


def test_a_chunked_answer_with_a_content_length_is_read_as_chunked(framed_server, tmp_path):
    """Transfer-Encoding overrides Content-Length (RFC 9112): the photo is the chunked
    body, whole, not its first 100 bytes cached as verified."""
    got = fetch.Fetcher(fetch_test_config(tmp_path)).fetch(
        _row(f"{framed_server}/chunked/0123456789abcdef.jpg"))
    assert got.data == JPEG


def _self_signed(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class _TLSFramedServer(_FramedServer):
    def __init__(self, context: ssl.SSLContext):
        super().__init__(("127.0.0.1", 0), _Framed)
        self.context = context

    def get_request(self):
        sock, addr = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), addr


@pytest.mark.parametrize("framing", ["close", "unframed"])
def test_the_deadline_holds_over_https(tmp_path, framing):
    """The CVDF mirror is https: after TLS wrapping, the socket a connection first made is
    detached, and the watchdog must cut the TLS socket's reads instead."""
    cert, key = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv = _TLSFramedServer(context)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        fetcher = fetch.Fetcher(fetch_test_config(tmp_path, deadline_s=1.0, fetch_attempts=1))
        fetcher._http._session.verify = cert  # trust the test's certificate, nothing else
        start = time.monotonic()
        with pytest.raises(fetch.FetchFailed) as err:
            fetcher.fetch(_row(f"https://127.0.0.1:{srv.server_address[1]}/{framing}/"
                               "0123456789abcdef.jpg"))
        assert time.monotonic() - start < 20  # generous: the trickle alone takes minutes
        assert err.value.reason == fetch.TIMEOUT, err.value.detail
        assert "cut at the deadline" in err.value.detail
    finally:
        srv.shutdown()
        srv.server_close()
