"""The SSRF guard for every URL the server calls or fetches on a caller's behalf.

A URL is refused when its scheme is not http(s), when it carries credentials, or when its host resolves to a
loopback, private, link-local, multicast, reserved or cloud-metadata address (unless the operator allows private
hosts). The check resolves the name and returns the vetted addresses, and the caller connects to one of those
addresses (not to the name again), so a DNS answer that changes between the check and the connection (rebinding)
cannot redirect the request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),
        ipaddress.ip_address("169.254.170.2"),
        ipaddress.ip_address("100.100.100.200"),
        ipaddress.ip_address("fd00:ec2::254"),
    }
)


class UrlRefused(ValueError):
    """The URL may not be called; the message says why, without internal detail."""


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


def _unmapped(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    address = _unmapped(address)
    if address in METADATA_ADDRESSES:
        return False
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10"))
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


async def vet_url(url: str, *, allow_private: bool) -> VettedUrl:
    """Resolve and check a URL. Raises ``UrlRefused``."""
    scheme, host, port = check_url_shape(url)
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        candidates = [literal]
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            candidates = [ipaddress.ip_address("127.0.0.1")]
        else:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise UrlRefused(f"the host {host!r} does not resolve") from exc
            candidates = []
            for info in infos:
                address = ipaddress.ip_address(info[4][0].split("%")[0])
                if address not in candidates:
                    candidates.append(address)
    if not candidates:
        raise UrlRefused(f"the host {host!r} does not resolve")
    if any(_unmapped(address) in METADATA_ADDRESSES for address in candidates):
        raise UrlRefused(f"the host {host!r} resolves to a cloud metadata address")  # never allowed, even for private hosts
    if not allow_private:
        refused = [address for address in candidates if not is_public_address(address)]
        if refused:
            raise UrlRefused(f"the host {host!r} resolves to a private, loopback, link-local or metadata address")
    return VettedUrl(url=url, scheme=scheme, host=host, port=port, addresses=tuple(str(address) for address in candidates))
