"""Which URLs a worker may fetch: http(s) only, and never private or internal addresses.

A cloud worker is one hop from its metadata service (169.254.169.254) and its private
network; an image table is untrusted input, and a redirect can point anywhere. So:

- `check_url` refuses schemes other than http and https, and hosts whose addresses are
  private, shared, loopback, link-local, reserved, multicast or unspecified (anything not
  globally routable), unless the user
  passed --allow_private_network (tests on 127.0.0.1 do). Every redirect hop is checked.
- `guarded_session` also checks the address each connection actually reached, so a DNS
  name that resolves to a public address when checked and to 127.0.0.1 when connecting
  (DNS rebinding) is still refused.
"""
from __future__ import annotations

import ipaddress
import socket
import urllib.parse

import requests
import urllib3
from requests.adapters import HTTPAdapter

ALLOWED_SCHEMES = ("http", "https")


class BlockedURL(Exception):
    """A URL the fetcher must not request; the message says why."""


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    # not is_global also covers shared (100.64/10, carrier NAT) and documentation ranges
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local
            or ip.is_reserved or ip.is_multicast or ip.is_unspecified)


def check_url(url: str, allow_private: bool = False) -> None:
    """Raise BlockedURL unless the URL is http(s) to a public address.

    DNS names are resolved here; a name that does not resolve is not blocked (the request
    then fails as a connection error, which is retried like any network fault).
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port  # .port raises on a bad port number
    except ValueError as err:
        raise BlockedURL(f"malformed URL: {err}") from None
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise BlockedURL(f"scheme {parts.scheme or '(none)'!r} is not allowed, only http and https")
    if not host:
        raise BlockedURL("no host in URL")
    if allow_private:
        return
    try:
        addresses = [info[4][0] for info in socket.getaddrinfo(host, port or 80,
                                                               proto=socket.IPPROTO_TCP)]
    except (socket.gaierror, UnicodeError):
        return
    internal = sorted({a for a in addresses if _is_internal(a)})
    if internal:
        raise BlockedURL(f"host {host!r} resolves to non-public address {internal[0]}; "
                         f"pass --allow_private_network to allow it")


def _check_peer(sock: socket.socket) -> None:
    address = sock.getpeername()[0]
    if _is_internal(address):
        sock.close()
        raise BlockedURL(f"connection reached non-public address {address}")


class _GuardedHTTPConnection(urllib3.connection.HTTPConnection):
    def _new_conn(self):
        sock = super()._new_conn()
        _check_peer(sock)
        return sock


class _GuardedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def _new_conn(self):
        sock = super()._new_conn()
        _check_peer(sock)
        return sock


class _GuardedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _GuardedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


class _GuardedAdapter(HTTPAdapter):
    """An adapter whose connections verify the address they reached."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _GuardedHTTPPool,
                                                   "https": _GuardedHTTPSPool}


def guarded_session(pool_size: int, allow_private: bool = False) -> requests.Session:
    """A requests Session for untrusted URLs, with `pool_size` connections per host.

    Environment proxies are ignored (trust_env=False): a proxy would hide where a request
    really goes, and workers should not depend on the launching shell's settings.
    """
    session = requests.Session()
    session.trust_env = False
    adapter = (HTTPAdapter if allow_private else _GuardedAdapter)(
        pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "open-sandwiches/0.1"
    return session
