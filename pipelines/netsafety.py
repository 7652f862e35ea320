"""Which URLs a worker may fetch, and for how long: http(s) only, public addresses, a deadline.

A cloud worker is one hop from its metadata service (169.254.169.254) and its private
network; an image table is untrusted input, and a redirect can point anywhere. So:

- `check_url` refuses schemes other than http and https, and hosts whose addresses are
  private, shared, loopback, link-local, reserved, multicast or unspecified (anything not
  globally routable), also when an IPv6 address embeds such an IPv4 address (6to4
  2002::/16, Teredo 2001::/32, NAT64 64:ff9b::/96, IPv4-mapped), unless the user passed
  --allow_private_network (tests on 127.0.0.1 do). Link-local addresses (169.254/16,
  fe80::/10: the metadata service) stay refused even then: no photo mirror lives there.
  Every redirect hop is checked.
- It parses the URL the way the request will: requests prepares it and urllib3's
  `parse_url` picks the host to connect to. `urllib.parse.urlsplit` disagrees with them
  on URLs such as `http://127.0.0.1:9\\@8.8.8.8/` (urlsplit: host 8.8.8.8; urllib3: host
  127.0.0.1), so the fetcher checks the very request it sends (`check_prepared` on the
  prepared URL, where both readings must agree).
- `guarded_session` also checks the address each connection actually reached, so a DNS
  name that resolves to a public address when checked and to 127.0.0.1 when connecting
  (DNS rebinding) is still refused.
- `Watchdog` enforces a deadline on a whole request: a server that trickles a byte every
  few hundred milliseconds never trips a read timeout, so at the deadline the watchdog
  shuts the request's socket down from its own thread and the read ends at once.
"""
from __future__ import annotations

import heapq
import ipaddress
import itertools
import socket
import threading
import time
import urllib.parse

import requests
import urllib3
from requests.adapters import HTTPAdapter

ALLOWED_SCHEMES = ("http", "https")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")           # RFC 6052: IPv4 in the last 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")   # RFC 8215: local-use, any layout
_V4_COMPATIBLE = ipaddress.ip_network("::/96")          # deprecated ::a.b.c.d
# Metadata services outside link-local space: AWS's IPv6 endpoint (a unique-local address).
_METADATA = {ipaddress.ip_address("fd00:ec2::254")}


class BlockedURL(Exception):
    """A URL the fetcher must not request; the message says why."""


def _internal_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # not is_global also covers shared (100.64/10, carrier NAT) and documentation ranges
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local
            or ip.is_reserved or ip.is_multicast or ip.is_unspecified)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries, which some network on the way may unwrap."""
    out = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo:
        out += list(ip.teredo)  # (server, client)
    if ip in _NAT64 or ip in _V4_COMPATIBLE:
        out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL or (ip in _V4_COMPATIBLE and int(ip) > 1):
            return True
        if any(_internal_ip(v4) for v4 in embedded_ipv4(ip)):
            return True
    return _internal_ip(ip)


def _is_link_local(address: str) -> bool:
    """169.254/16 or fe80::/10, also inside an IPv6 address (local-use NAT64 included), or
    a cloud's metadata address: refused even with --allow_private_network, since that is
    where a metadata service answers."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip in _METADATA:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        carried = embedded_ipv4(ip)
        if ip in _NAT64_LOCAL:
            carried.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if any(v4.is_link_local for v4 in carried):
            return True
    return ip.is_link_local


def _refused(allow_private: bool):
    """The test of an address: link-local only with --allow_private_network, else any
    address that is not globally routable."""
    return _is_link_local if allow_private else _is_internal


def prepare(url: str) -> str:
    """The URL as requests will send it, or BlockedURL if requests cannot prepare it."""
    try:
        return requests.Request("GET", url).prepare().url or ""
    except (requests.exceptions.RequestException, ValueError, UnicodeError) as err:
        raise BlockedURL(f"malformed URL: {err}") from None


def _read(prepared: str) -> tuple[str, int | None, str]:
    """(scheme, port, host) of a prepared URL, as the request will read it.

    requests rebuilds the URL from urllib3's `parse_url`, then its adapter picks the
    connection's host with `urllib.parse.urlparse`: both readings must name the same host,
    or the URL is refused as ambiguous.
    """
    try:
        ours = urllib3.util.parse_url(prepared)
        theirs = urllib.parse.urlsplit(prepared)
        port = theirs.port  # raises on a bad port number
    except ValueError as err:
        raise BlockedURL(f"malformed URL: {err}") from None
    host = (ours.host or "").strip("[]").lower()
    if host != (theirs.hostname or "") or (ours.port or None) != port:
        raise BlockedURL(f"URL parsers disagree on its host ({host!r} and "
                         f"{theirs.hostname!r}): refused as ambiguous")
    return (ours.scheme or "").lower(), port, host


def host_key(url: str) -> str:
    """The host a request to `url` connects to, as `scheme://host:port` ('' if malformed):
    the unit of per-host limits and pauses. (A grouping, not a check: urllib3's reading.)"""
    try:
        parts = urllib3.util.parse_url(url)
    except ValueError:
        return ""
    return f"{(parts.scheme or '').lower()}://{(parts.host or '').lower()}:{parts.port or ''}"


def check_url(url: str, allow_private: bool = False) -> str:
    """The prepared URL to request, or BlockedURL unless it is http(s) to a public address."""
    prepared = prepare(url)
    check_prepared(prepared, allow_private)
    return prepared


def check_prepared(prepared: str, allow_private: bool = False) -> None:
    """BlockedURL unless a URL, as requests prepared it, is http(s) to a public address.

    DNS names are resolved here; a name that does not resolve is not blocked (the request
    then fails as a connection error, which is retried like any network fault).
    """
    scheme, port, host = _read(prepared)
    if scheme not in ALLOWED_SCHEMES:
        raise BlockedURL(f"scheme {scheme or '(none)'!r} is not allowed, only http and https")
    if not host:
        raise BlockedURL("no host in URL")
    verb = "is"
    try:
        addresses = [str(ipaddress.ip_address(host.split("%")[0]))]
    except ValueError:
        verb = "resolves to"
        try:
            addresses = [info[4][0] for info in socket.getaddrinfo(
                host, port or 80, proto=socket.IPPROTO_TCP)]
        except (OSError, UnicodeError):
            return
    refused = _refused(allow_private)
    internal = sorted({a for a in addresses if refused(a)})
    if internal:
        if allow_private:
            raise BlockedURL(f"host {host!r} {verb} link-local or metadata address "
                             f"{internal[0]}, refused even with --allow_private_network")
        raise BlockedURL(f"host {host!r} {verb} non-public address {internal[0]}; "
                         f"pass --allow_private_network to allow it")


# -- deadlines --------------------------------------------------------------------------
class _Guard:
    """One request's deadline, and the connection it is using (set by the connection)."""

    def __init__(self, deadline: float):
        self.deadline, self.expired, self.done = deadline, False, False
        self.conn = None


class Watchdog:
    """Shuts down the socket of any request still running at its deadline.

    Use `with watchdog.guard(deadline) as g:` around a request made through a
    `guarded_session`; afterwards `g.expired` says whether the deadline cut it. One helper
    thread per watchdog sleeps until the earliest deadline; it starts on first use.
    """

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._heap: list = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def guard(self, deadline: float) -> "_Guarded":
        return _Guarded(self, _Guard(deadline))

    def _add(self, g: _Guard) -> None:
        with self._cond:
            heapq.heappush(self._heap, (g.deadline, next(self._seq), g))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fetch-watchdog",
                                                daemon=True)
                self._thread.start()
            if self._heap[0][2] is g:  # a new earliest deadline: re-arm the sleep
                self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = self._clock()
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= now):
                    _, _, g = heapq.heappop(self._heap)
                    if not g.done:
                        g.expired = True
                        _shutdown(g.conn, g)
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def attach(self, conn) -> None:
        """Called by a connection starting a request on this thread."""
        g = getattr(_current, "guard", None)
        if g is None:
            return
        with self._cond:
            g.conn = conn
            conn._guard = g
            if g.expired:
                _shutdown(conn, g)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()


class _Guarded:
    def __init__(self, watchdog: Watchdog, g: _Guard):
        self._w, self._g = watchdog, g

    def __enter__(self) -> _Guard:
        _current.guard, _current.watchdog = self._g, self._w
        self._w._add(self._g)
        return self._g

    def __exit__(self, *exc) -> None:
        with self._w._cond:
            self._g.done = True
            if self._g.conn is not None and getattr(self._g.conn, "_guard", None) is self._g:
                self._g.conn._guard = None
        _current.guard = _current.watchdog = None


_current = threading.local()


def _shutdown(conn, g: _Guard) -> None:
    """Wake a blocked read on this connection's socket, if it still serves the expired
    request `g` (a pooled connection may since serve another; caller holds the lock).

    The socket is `conn.sock` or, once http.client has let go of it, the one the
    connection last connected: for an answer that ends the connection (`Connection:
    close`, HTTP/1.0) http.client sets `conn.sock` to None and leaves the socket to the
    response, whose reads must still be cut."""
    sock = getattr(conn, "sock", None) or getattr(conn, "_raw_sock", None)
    if sock is None or getattr(conn, "_guard", None) is not g:
        return
    try:  # the plain socket's shutdown: SSLSocket.shutdown would touch SSL state
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


# -- connections ------------------------------------------------------------------------
def _check_peer(sock: socket.socket, allow_private: bool) -> None:
    address = sock.getpeername()[0]
    if _refused(allow_private)(address):
        sock.close()
        kind = "link-local or metadata" if allow_private else "non-public"
        raise BlockedURL(f"connection reached {kind} address {address}")


class _Watched:
    """Mixin: register with the current request's deadline; check the peer it reached."""

    allow_private = False
    _guard = None
    _raw_sock = None  # the connected socket (TLS-wrapped for https), kept past its release

    def request(self, *args, **kwargs):
        watchdog = getattr(_current, "watchdog", None)
        if watchdog is not None:
            watchdog.attach(self)
        return super().request(*args, **kwargs)

    def _new_conn(self):
        sock = super()._new_conn()
        _check_peer(sock, self.allow_private)
        return sock

    def connect(self):
        super().connect()
        # After TLS wrapping, for https: the socket `_new_conn` made is detached by then.
        self._raw_sock = self.sock


class _HTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _PrivateHTTPConnection(_HTTPConnection):
    allow_private = True


class _PrivateHTTPSConnection(_HTTPSConnection):
    allow_private = True


def _pool(base, conn_cls):
    return type(f"_{conn_cls.__name__}Pool", (base,), {"ConnectionCls": conn_cls})


_POOLS = {
    False: {"http": _pool(urllib3.HTTPConnectionPool, _HTTPConnection),
            "https": _pool(urllib3.HTTPSConnectionPool, _HTTPSConnection)},
    True: {"http": _pool(urllib3.HTTPConnectionPool, _PrivateHTTPConnection),
           "https": _pool(urllib3.HTTPSConnectionPool, _PrivateHTTPSConnection)},
}


class _GuardedAdapter(HTTPAdapter):
    """An adapter whose connections take deadlines and verify the address they reached
    (only that it is not link-local, where private networks are allowed)."""

    def __init__(self, allow_private: bool, **kwargs):
        self._allow_private = allow_private
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS[self._allow_private])


def guarded_session(pool_size: int, allow_private: bool = False) -> requests.Session:
    """A requests Session for untrusted URLs, with `pool_size` connections per host.

    Environment proxies are ignored (trust_env=False): a proxy would hide where a request
    really goes, and workers should not depend on the launching shell's settings. Photos
    do not compress, so the session asks for them as they are (Accept-Encoding: identity);
    a server that compresses anyway is decoded, or fails as `bad_response`.
    """
    session = requests.Session()
    session.trust_env = False
    adapter = _GuardedAdapter(allow_private, pool_connections=max(pool_size, 16),
                              pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "open-sandwiches/0.1"
    session.headers["Accept-Encoding"] = "identity"
    return session
