"""The SSRF guard for every URL the server calls or fetches on a caller's behalf.

A URL is refused when its scheme is not http(s), when it carries credentials, or when its host resolves to a
loopback, private, link-local, multicast, reserved or cloud-metadata address (unless the operator allows private
hosts). IPv6 transition addresses (IPv4-mapped, NAT64, 6to4, Teredo) are judged by the IPv4 address they carry. The
check resolves the name and returns the vetted addresses, and the caller connects to one of those addresses (not to
the name again), so a DNS answer that changes between the check and the connection (rebinding) cannot redirect the
request.

Every refusal of a host says the same thing, whether the name does not resolve, takes too long to, or resolves to a
refused address: the error text never tells a caller how the server's DNS maps internal names. Name lookups run with
a deadline on a small thread pool of their own, never on the event loop's default executor (which storage I/O
shares), so a zone that never answers stalls nothing but the lookups.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("100.100.100.200"),
        ipaddress.ip_address("fd00:ec2::254"),
    }
)

_CARRIER_GRADE_NAT = ipaddress.ip_network("100.64.0.0/10")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address is the last 32 bits
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: local only, prefix length chosen by the network
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")  # RFC 3056: the IPv4 address is bits 16-47
_TEREDO = ipaddress.ip_network("2001::/32")  # RFC 4380: server and (obfuscated) client IPv4 addresses
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")  # deprecated site-local: an internal network
# Never public, whatever they carry: a local-use NAT64 prefix translates into the operator's own network, Teredo
# reaches hosts behind a NAT through relays, and site-local addresses are internal by definition.
_NEVER_PUBLIC_V6 = (_NAT64_LOCAL_USE, _TEREDO, _SITE_LOCAL)

REFUSED_HOST = "the host {host!r} does not resolve to a public address"

Lookup = Callable[[str, int], Sequence[str]]


class UrlRefused(ValueError):
    """The URL may not be called; the message says why, without internal detail."""


def system_lookup(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, from the system resolver (blocking: it runs on the DNS thread pool)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


# The resolver seam: every lookup of the guard goes through this function, read at each call (tests replace it).
lookup: Lookup = system_lookup


def _run_lookup(host: str, port: int) -> Sequence[str]:
    return lookup(host, port)


@functools.cache
def _executor(max_workers: int) -> ThreadPoolExecutor:
    """One pool per size, shared by every resolver of the process that asks for that size (built at first use)."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dns")


class Resolver:
    """Name lookups with a deadline (DNS_TIMEOUT_SECONDS) on their own pool of DNS_MAX_CONCURRENCY threads."""

    def __init__(self, *, timeout_seconds: float = 5.0, max_concurrency: int = 8) -> None:
        self.timeout_seconds = timeout_seconds
        self.max_concurrency = max_concurrency

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The distinct addresses of ``host``; empty when it does not resolve, or not within the deadline.

        A lookup still waiting for a thread when the deadline passes is dropped from the queue; one already running
        finishes on its thread, and its answer is ignored.
        """
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                answers = await loop.run_in_executor(_executor(self.max_concurrency), _run_lookup, host, port)
        except TimeoutError:
            return []
        except Exception:  # socket.gaierror, UnicodeError for a bad IDN, anything a replaced seam raises
            return []
        addresses: list[IPAddress] = []
        for answer in answers:
            try:
                address = ipaddress.ip_address(str(answer).split("%")[0])
            except ValueError:
                continue
            if address not in addresses:
                addresses.append(address)
        return addresses


@functools.cache
def default_resolver() -> Resolver:
    """The resolver with the default deadline and pool size, for callers that were given none."""
    return Resolver()


@dataclass(frozen=True)
class VettedUrl:
    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]

    def pinned(self) -> tuple[str, dict[str, str], dict[str, str]]:
        """(URL with the vetted IP in place of the host, headers, httpx extensions) for a pinned connection."""
        parts = urlsplit(self.url)
        address = self.addresses[0]
        literal = f"[{address}]" if ":" in address else address
        default_port = 443 if self.scheme == "https" else 80
        netloc = literal if self.port == default_port else f"{literal}:{self.port}"
        pinned_url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        host_header = self.host if self.port == default_port else f"{self.host}:{self.port}"
        extensions = {"sni_hostname": self.host} if self.scheme == "https" else {}
        return pinned_url, {"Host": host_header}, extensions


def _nat64_candidates(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 address under each RFC 6052 layout a /48 local-use prefix allows (/48, /56, /64, /96)."""
    packed = address.packed
    without_u_octet = packed[:8] + packed[9:]  # bits 64-71 are the reserved "u" octet in the /32-/64 layouts
    candidates = [ipaddress.IPv4Address(without_u_octet[length // 8 : length // 8 + 4]) for length in (48, 56, 64)]
    candidates.append(ipaddress.IPv4Address(packed[12:]))
    return candidates


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries by the transition mechanism its prefix names (none for IPv4)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address in _NAT64_WELL_KNOWN or address in _IPV4_COMPATIBLE or address in _IPV4_TRANSLATED:
        return [ipaddress.IPv4Address(address.packed[12:])]
    if address in _NAT64_LOCAL_USE:
        return _nat64_candidates(address)
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        server, client = address.teredo
        return [server, client]
    return []


def _public_ipv4(address: ipaddress.IPv4Address) -> bool:
    return not (
        address in METADATA_ADDRESSES
        or address in _CARRIER_GRADE_NAT
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def is_metadata_address(address: IPAddress) -> bool:
    """A cloud metadata address, itself or carried inside an IPv6 address (refused even when private hosts are allowed)."""
    return address in METADATA_ADDRESSES or any(v4 in METADATA_ADDRESSES for v4 in embedded_ipv4(address))


def is_public_address(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv4Address):
        return _public_ipv4(address)
    if any(address in network for network in _NEVER_PUBLIC_V6) or address in METADATA_ADDRESSES:
        return False
    if address.ipv4_mapped is not None or address in _NAT64_WELL_KNOWN or address in _SIX_TO_FOUR:
        return all(_public_ipv4(v4) for v4 in embedded_ipv4(address))  # as public as the IPv4 address they reach
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_site_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_url_shape(url: str) -> tuple[str, str, int]:
    """Refuse what is wrong with the URL itself; return (scheme, host, port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlRefused("the URL cannot be parsed") from exc
    scheme = (parts.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise UrlRefused("only http and https URLs are allowed")
    if parts.username or parts.password:
        raise UrlRefused("URLs with credentials are not allowed")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UrlRefused("the URL has no host")
    return scheme, host, port or (443 if scheme == "https" else 80)


async def vet_url(url: str, *, allow_private: bool, resolver: Resolver | None = None) -> VettedUrl:
    """Resolve and check a URL. Raises ``UrlRefused``, with one message for every refusal of its host."""
    scheme, host, port = check_url_shape(url)
    candidates: list[IPAddress]
    try:
        candidates = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            candidates = [ipaddress.ip_address("127.0.0.1")]
        else:
            candidates = await (resolver or default_resolver()).resolve(host, port)
    refused = (
        not candidates
        or any(is_metadata_address(address) for address in candidates)  # never allowed, even for private hosts
        or (not allow_private and not all(is_public_address(address) for address in candidates))
    )
    if refused:
        raise UrlRefused(REFUSED_HOST.format(host=host))
    return VettedUrl(url=url, scheme=scheme, host=host, port=port, addresses=tuple(str(address) for address in candidates))


def redact_url(url: str) -> str:
    """The URL as a log line may show it: no credentials, no query string, no fragment (they may carry a token)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    path = parts.path if len(parts.path) <= 200 else parts.path[:200] + "..."
    shown = urlunsplit((parts.scheme, netloc, path, "", ""))
    return shown + ("?[redacted]" if parts.query or parts.fragment else "")


class _RedactUrls(logging.Filter):
    """Shows the URLs an HTTP client logs (httpx: ``HTTP Request: POST <url> ...``) as ``redact_url`` does."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_looks_like_url(arg) for arg in record.args):
            record.args = tuple(redact_url(str(arg)) if _looks_like_url(arg) else arg for arg in record.args)
        return True


def _looks_like_url(value: object) -> bool:
    return not isinstance(value, int | float) and str(value).startswith(("http://", "https://"))


def redact_client_logs(logger_name: str = "httpx") -> None:
    """Make the HTTP client's own log lines (shown when an operator turns its level up) redact URLs too. Idempotent."""
    client_logger = logging.getLogger(logger_name)
    if not any(isinstance(existing, _RedactUrls) for existing in client_logger.filters):
        client_logger.addFilter(_RedactUrls())
