"""A local image server for tests, benchmarks and the demo, with the internet's faults.

Serves a catalog's photos on 127.0.0.1 under the URL shapes a build uses:
`/original/{id}.jpg` (Flickr originals), `/thumbnail/{id}.jpg` (Thumbnail300KURL),
`/{subset}/{id}.jpg` and `/cvdf/{subset}/{id}.jpg` (the CVDF mirror's layout; the second
gives the mirror a route of its own, `cvdf`, so `--cvdf_base_url {base}/cvdf` can be
faulted apart from the others). Faults are injected per ImageID (or for a deterministic
fraction of ImageIDs) on chosen routes, so tests can check that each one becomes the
right failure reason, and that a fallback source rescues it. Host-wide behaviours model
a whole host in trouble: a 429 storm (`storm_rate` of all requests answered 429 with
Retry-After, whatever the request rate), a rate limiter (`rate_limit`: a token bucket
that answers 429 with the whole seconds until its next token to requests above the rate,
as real hosts throttle bulk clients) and an outage (every request answered 503 while
`outage` is set).

    open-sandwiches serve-images demo_out/catalog --port 8000 --fault_rate 0.2

Every request is counted per path, and the most requests in progress at once is kept
(`max_active`), so tests can check retry budgets, that a cached rerun makes no request at
all, and that a client's window never exceeds its concurrency.
"""
from __future__ import annotations

import collections
import email.utils
import hashlib
import math
import http.server
import os
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

FAULTS = ("not_found", "gone", "error_then_ok", "rate_limited", "hang", "truncated",
          "corrupt_jpeg", "html", "placeholder", "redirect_loop", "too_large", "wrong_md5",
          "unavailable", "retry_after_date", "retry_after_nan", "length_abc", "length_list",
          "bad_gzip")
# Faults that take as long as the client lets them (a body of a byte every `trickle_s`):
# not cycled through by fault_rate unless asked for, so mixed-fault runs stay quick.
SLOW_FAULTS = ("trickle",)
# What the fetch stage should make of each fault (None: a retry recovers the photo), and
# how many requests it may spend on it with --fetch_attempts 2.
FAULT_OUTCOMES = {
    "not_found": ("not_found", 1), "gone": ("not_found", 1),
    "error_then_ok": (None, 2), "rate_limited": (None, 2),
    "hang": ("timeout", 2), "truncated": ("truncated", 2),
    "corrupt_jpeg": ("checksum", 1), "html": ("not_an_image", 1),
    "placeholder": ("placeholder", 1), "redirect_loop": ("redirect_loop", 6),
    "too_large": ("too_large", 1), "wrong_md5": ("checksum", 1),
    "unavailable": ("server_error", 2), "retry_after_date": (None, 2),
    "retry_after_nan": (None, 2), "length_abc": (None, 1), "length_list": (None, 1),
    "bad_gzip": ("bad_response", 1),
}
PLACEHOLDER_PATH = "/images/en-us/photo_unavailable.png"
# A tiny valid PNG standing in for Flickr's "photo unavailable" image.
PLACEHOLDER_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5a0cfd10000000049454e44ae426082")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "ImageServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: tests count requests instead
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's algorithm and
        # delayed ACKs add ~40 ms to every keep-alive response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.active += 1
            srv.max_active = max(srv.max_active, srv.active)
        try:
            self._get()
        finally:
            with srv.lock:
                srv.active -= 1

    def _get(self):
        srv = self.server
        path = urllib.parse.urlsplit(self.path).path
        with srv.lock:
            srv.requests[path] += 1
            count = srv.requests[path]
        refill_s = srv.take_token()  # on arrival, as a limiter at the host's edge counts
        if srv.latency_s:
            time.sleep(srv.latency_s)
        if path == PLACEHOLDER_PATH:
            return self._send(200, PLACEHOLDER_PNG, "image/png")
        if srv.outage:
            return self._send(503, b"Service Unavailable", "text/plain")
        if srv.storm_rate and _fraction(f"{path}#{count}") < srv.storm_rate:
            with srv.lock:
                srv.storm_answers += 1
            return self._send(429, b"Too Many Requests", "text/plain",
                              {"Retry-After": srv.storm_retry_after})
        if refill_s:
            return self._send(429, b"Too Many Requests", "text/plain",
                              {"Retry-After": str(max(1, math.ceil(refill_s)))})
        route, _, name = path.strip("/").rpartition("/")
        if route.startswith("cvdf/"):
            route = "cvdf"
        image_id = name.split(".")[0]
        data = srv.photo(image_id)
        if data is None:
            return self._send(404, b"no such photo", "text/plain")
        if image_id in srv.redirects and route in srv.fault_routes:
            return self._send(302, b"", "text/plain", {"Location": srv.redirects[image_id]})
        fault = srv.fault_for(route, image_id)
        if fault:
            return self._fault(fault, data, path, count)
        return self._send(200, data, "image/png" if data[:4] == b"\x89PNG" else "image/jpeg")

    def _fault(self, fault: str, data: bytes, path: str, count: int):
        if fault == "not_found":
            return self._send(404, b"Not Found", "text/plain")
        if fault == "gone":
            return self._send(410, b"Gone", "text/plain")
        if fault == "error_then_ok" and count <= 1:
            return self._send(500, b"Internal Server Error", "text/plain")
        if fault == "rate_limited" and count <= 1:
            return self._send(429, b"Slow down", "text/plain", {"Retry-After": "1"})
        if fault == "hang":
            time.sleep(self.server.hang_s)
            return self._send(200, data, "image/jpeg")
        if fault == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return None
        if fault == "corrupt_jpeg":
            return self._send(200, data[:600] + bytes(len(data) - 600), "image/jpeg")
        if fault == "html":
            return self._send(200, b"<!doctype html><html><body>Oops</body></html>", "text/html")
        if fault == "placeholder":
            return self._send(302, b"", "text/plain", {"Location": PLACEHOLDER_PATH})
        if fault == "redirect_loop":
            return self._send(302, b"", "text/plain", {"Location": path})
        if fault == "too_large":
            return self._send(200, data + bytes(self.server.too_large_bytes), "image/jpeg")
        if fault == "wrong_md5":
            return self._send(200, data[:-2] + b"\x00\x00", "image/jpeg")
        if fault == "unavailable":
            return self._send(503, b"Service Unavailable", "text/plain")
        if fault == "retry_after_date" and count <= 1:
            when = email.utils.formatdate(time.time() + 1, usegmt=True)
            return self._send(429, b"Slow down", "text/plain", {"Retry-After": when})
        if fault == "retry_after_nan" and count <= 1:
            return self._send(429, b"Slow down", "text/plain", {"Retry-After": "nan"})
        if fault == "length_abc":
            return self._send_raw(200, data, {"Content-Length": "abc", "Connection": "close"})
        if fault == "length_list":
            n = str(len(data))
            return self._send_raw(200, data, {"Content-Length": f"{n}, {n}"})
        if fault == "bad_gzip":
            return self._send(200, data, "image/jpeg", {"Content-Encoding": "gzip"})
        if fault == "trickle":
            return self._trickle(data)
        return self._send(200, data, "image/jpeg")  # the later tries of *_then_ok faults

    def _trickle(self, data: bytes):
        """The whole photo, one byte every trickle_s: never idle long enough for a read
        timeout, and never done in time either."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(self.server.trickle_s)
        except OSError:  # the client cut it off
            self.close_connection = True

    def _send_raw(self, status: int, body: bytes, headers: dict):
        """An answer with exactly these headers (hostile ones included), then the body."""
        self.send_response(status)
        self.send_header("Content-Type", "image/jpeg")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            pass
        if headers.get("Connection") == "close":
            self.close_connection = True

    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (size cap)
            self.close_connection = True


def _fraction(text: str) -> float:
    """A deterministic number in [0, 1) for a string."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32


class ImageServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """Serves photos from a folder of `{image_id}.{ext}` files, with injected faults.

    Args:
      photo_dir: the catalog's photos folder.
      faults: ImageID -> fault kind, applied on `fault_routes`.
      fault_rate: also give this fraction of ImageIDs (chosen by hash) a fault, cycling
        through `fault_kinds`.
      fault_routes: the routes faults apply to ("original" by default: the fallbacks work).
      redirects: ImageID -> Location to redirect to (on `fault_routes`), for safety tests.
      pool: serve any 16-hex ImageID with no photo of its own from the folder's photos,
        chosen by hash (benchmarks on the full-size tables, which have no photos).
      latency_s: added to every response (100 ms models a far server).
      hang_s: how long a "hang" fault stalls (longer than the client's read timeout).
      trickle_s: the pause between bytes of a "trickle" fault.
      storm_rate: answer this fraction of all requests (by a hash of path and count) 429
        with Retry-After `storm_retry_after`.
      rate_limit: requests a second this host serves (0: no limit); a request that finds
        the bucket (`rate_burst` tokens, default one second's worth) empty is answered 429
        with Retry-After: the whole seconds until the next token, at least 1.
      outage: answer every request 503 (settable while serving).
    """

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024

    def __init__(self, photo_dir: str, faults: dict[str, str] | None = None,
                 fault_rate: float = 0.0, fault_kinds: tuple[str, ...] = FAULTS,
                 fault_routes: tuple[str, ...] = ("original",), latency_s: float = 0.0,
                 hang_s: float = 5.0, too_large_bytes: int = 4 << 20, port: int = 0,
                 redirects: dict[str, str] | None = None, pool: bool = False,
                 trickle_s: float = 0.2, storm_rate: float = 0.0,
                 storm_retry_after: str = "1", outage: bool = False,
                 rate_limit: float = 0.0, rate_burst: float | None = None):
        self.rate_limit, self.rate_burst = rate_limit, rate_burst
        self._fill_bucket()  # before the socket is bound: a bad value leaves nothing open
        super().__init__(("127.0.0.1", port), _Handler)
        self.photo_dir = photo_dir
        self.faults = dict(faults or {})
        known = set(FAULTS) | set(SLOW_FAULTS)
        unknown = set(self.faults.values()) - known | set(fault_kinds) - known
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {sorted(known)}")
        self.fault_rate, self.fault_kinds, self.fault_routes = fault_rate, fault_kinds, fault_routes
        self.latency_s, self.hang_s, self.too_large_bytes = latency_s, hang_s, too_large_bytes
        self.trickle_s, self.storm_rate, self.storm_retry_after = trickle_s, storm_rate, storm_retry_after
        self.outage = outage
        self.active = self.max_active = self.storm_answers = self.limited_answers = 0
        self.redirects = dict(redirects or {})
        self._pool = sorted(os.listdir(photo_dir)) if pool else []
        self.requests: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up (a size cap, a deadline, a killed build) is the
        internet's normal; anything else is still printed."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def photo(self, image_id: str) -> bytes | None:
        """The photo's bytes, whatever its format (URLs always say .jpg, as Flickr's do)."""
        if not image_id.isalnum():
            return None
        for ext in ("jpg", "png"):
            path = os.path.join(self.photo_dir, f"{image_id}.{ext}")
            if os.path.exists(path):
                with open(path, "rb") as f:
                    return f.read()
        if self._pool and len(image_id) == 16:
            name = self._pool[int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16) % len(self._pool)]
            with open(os.path.join(self.photo_dir, name), "rb") as f:
                return f.read()
        return None

    def reset(self, **settings) -> None:
        """Clear the request counts and set fault settings (faults=..., fault_rate=...)."""
        with self.lock:
            self.requests.clear()
            self.faults, self.redirects, self.fault_rate = {}, {}, 0.0
            self.fault_kinds, self.fault_routes, self.latency_s = FAULTS, ("original",), 0.0
            self.storm_rate, self.storm_retry_after, self.outage = 0.0, "1", False
            self.max_active = self.storm_answers = self.limited_answers = 0
            self.rate_limit, self.rate_burst = 0.0, None
            for key, value in settings.items():
                setattr(self, key, value)
            self._fill_bucket()

    def _fill_bucket(self) -> None:
        """Check the limiter's settings and fill its bucket, whose size defaults to one
        second of `rate_limit` (at least one token: a bucket that never holds a whole one
        would refuse every request)."""
        if not (math.isfinite(self.rate_limit) and self.rate_limit >= 0):
            raise ValueError(f"rate_limit must be a number >= 0, not {self.rate_limit}")
        if self.rate_burst is None:
            self.rate_burst = max(1.0, self.rate_limit)
        if not (math.isfinite(self.rate_burst) and self.rate_burst >= 1):
            raise ValueError(f"rate_burst must be at least 1 token, not {self.rate_burst}")
        self._tokens, self._refilled = float(self.rate_burst), time.monotonic()

    def take_token(self) -> float:
        """Under `rate_limit`: 0.0 if a token was free (and is now taken), else the
        seconds until the next one (that request is refused and counted)."""
        if not self.rate_limit:
            return 0.0
        with self.lock:
            now = time.monotonic()
            self._tokens = min(self.rate_burst,
                               self._tokens + (now - self._refilled) * self.rate_limit)
            self._refilled = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            self.limited_answers += 1
            return (1.0 - self._tokens) / self.rate_limit

    def fault_for(self, route: str, image_id: str) -> str:
        if route not in self.fault_routes:
            return ""
        if image_id in self.faults:
            return self.faults[image_id]
        if self.fault_rate:
            h = int(hashlib.sha256(image_id.encode()).hexdigest()[:8], 16)
            if (h % 10_000) / 10_000 < self.fault_rate:
                return self.fault_kinds[(h // 10_000) % len(self.fault_kinds)]
        return ""

    def max_in_flight(self) -> int:
        """The most requests that were in progress at once since the last reset."""
        with self.lock:
            return self.max_active

    def total_requests(self) -> int:
        with self.lock:
            return sum(self.requests.values())

    def start(self) -> "ImageServer":
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> "ImageServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def command(args) -> int:
    """`open-sandwiches serve-images` with parsed flags (pipelines/cli.py declares them)."""
    photo_dir = os.path.join(args.catalog_dir, "photos")
    if not os.path.isdir(photo_dir):
        raise FileNotFoundError(f"{args.catalog_dir} has no photos/ folder: write a catalog "
                                f"with photos first (open-sandwiches demo writes one)")
    server = ImageServer(photo_dir, fault_rate=args.fault_rate, fault_kinds=tuple(args.fault_kinds),
                         latency_s=args.latency_ms / 1000, port=args.port, pool=args.pool,
                         hang_s=args.hang_s, storm_rate=args.storm_rate,
                         storm_retry_after=args.retry_after, rate_limit=args.rate_limit,
                         rate_burst=args.rate_burst)
    print(f"serving {photo_dir} on {server.base_url} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    from pipelines import cli
    return cli.run("serve-images", argv)


if __name__ == "__main__":
    sys.exit(main())
