"""The SSRF guard alone: each address family, the one refusal message, DNS lookups with a deadline on their own
threads (a lookup that never answers is injected at the resolver seam), and URLs as logs show them."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from pipelex_server import netguard
from pipelex_server.netguard import Resolver, UrlRefused, is_metadata_address, is_public_address, redact_url, vet_url

# --- address families --------------------------------------------------------------------------------------------------

PUBLIC = [
    "93.184.215.14",
    "8.8.8.8",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",  # IPv4-mapped
    "2002:808:808::1",  # 6to4 of a public address
    "64:ff9b::808:808",  # NAT64 well-known prefix, public address (what DNS64 answers on an IPv6-only network)
]

REFUSED = {
    # IPv4
    "127.0.0.1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "192.168.1.1": "private",
    "169.254.1.1": "link-local",
    "100.64.0.1": "carrier-grade NAT",
    "0.0.0.0": "unspecified",
    "224.0.0.1": "multicast",
    "240.0.0.1": "reserved",
    # IPv6
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fd12:3456::1": "unique local",
    "fec0::1": "site-local",
    "fec0:1:2::3": "site-local",
    "ff02::1": "multicast",
    "::ffff:10.0.0.1": "IPv4-mapped private",
    "::ffff:127.0.0.1": "IPv4-mapped loopback",
    "::10.0.0.1": "IPv4-compatible",
    "2002:a00:1::1": "6to4 of 10.0.0.1",
    "2002:7f00:1::": "6to4 of 127.0.0.1",
    "2002:c0a8:101::1": "6to4 of 192.168.1.1",
    "64:ff9b::a00:1": "NAT64 of 10.0.0.1",
    "64:ff9b::7f00:1": "NAT64 of 127.0.0.1",
    "64:ff9b::6440:1": "NAT64 of 100.64.0.1",
    "64:ff9b:1::a00:1": "local-use NAT64",
    "64:ff9b:1:808:8:800::": "local-use NAT64 (even of a public address: it translates into the local network)",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2": "Teredo",
    "2001:0:a00:1::": "Teredo with a private server",
}

METADATA = [
    "169.254.169.254",
    "169.254.170.2",
    "100.100.100.200",
    "fd00:ec2::254",
    "::ffff:169.254.169.254",
    "::ffff:a9fe:a9fe",
    "64:ff9b::a9fe:a9fe",  # NAT64, /96
    "64:ff9b::169.254.169.254",
    "64:ff9b:1:a9fe:a9:fe00::",  # local-use NAT64, /48 layout
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64, /96 layout
    "2002:a9fe:a9fe::1",  # 6to4
    "2001:0:a9fe:a9fe::",  # Teredo server
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo client (obfuscated: ~0x5601_5601 is 169.254.169.254)
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))
    assert not is_metadata_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(("address", "family"), REFUSED.items())
def test_non_public_addresses_of_every_family_are_refused(address: str, family: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address)), family


@pytest.mark.parametrize("address", METADATA)
def test_metadata_addresses_are_recognized_however_they_are_wrapped(address: str) -> None:
    parsed = ipaddress.ip_address(address)
    assert is_metadata_address(parsed) and not is_public_address(parsed)


@pytest.mark.parametrize("address", METADATA)
async def test_metadata_addresses_are_refused_even_when_private_hosts_are_allowed(address: str) -> None:
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(UrlRefused):
        await vet_url(f"http://{literal}/latest/meta-data/", allow_private=True)


@pytest.mark.parametrize("address", ["10.1.2.3", "fec0::1", "2002:a00:1::1", "64:ff9b::a00:1", "127.0.0.1"])
async def test_private_addresses_pass_when_private_hosts_are_allowed(address: str) -> None:
    literal = f"[{address}]" if ":" in address else address
    vetted = await vet_url(f"http://{literal}:8080/doc.pdf", allow_private=True)
    assert vetted.addresses == (address,)


# --- one refusal message -----------------------------------------------------------------------------------------------

ZONE = {
    "public.zone.test": ["93.184.215.14"],
    "private.zone.test": ["10.1.2.3"],
    "mixed.zone.test": ["93.184.215.14", "192.168.0.7"],
    "meta.zone.test": ["169.254.169.254"],
    "nat64.zone.test": ["64:ff9b::a00:1"],
    "sixtofour.zone.test": ["2002:a00:1::1"],
    "sitelocal.zone.test": ["fec0::1%3"],
}


class Zone:
    """A DNS zone at the resolver seam: known names answer from ``ZONE``, ``*.never.test`` never answers (until the
    test ends), anything else does not exist."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.changed = threading.Condition()
        self.running = 0
        self.most_running = 0
        self.calls: list[str] = []

    def lookup(self, host: str, port: int) -> list[str]:
        with self.changed:
            self.calls.append(host)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.changed.notify_all()
        try:
            if host.endswith(".never.test"):
                self.release.wait()
                raise socket.gaierror(socket.EAI_AGAIN, "released")
            if host in ZONE:
                return ZONE[host]
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        finally:
            with self.changed:
                self.running -= 1
                self.changed.notify_all()

    def wait_running(self, count: int, timeout: float = 5.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.running >= count, timeout)


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Zone]:
    fake = Zone()
    monkeypatch.setattr(netguard, "lookup", fake.lookup)
    yield fake
    fake.release.set()


async def _refusal(url: str, *, resolver: Resolver | None = None, allow_private: bool = False) -> str:
    with pytest.raises(UrlRefused) as caught:
        await vet_url(url, allow_private=allow_private, resolver=resolver)
    return str(caught.value)


async def test_a_public_name_resolves_to_its_vetted_addresses(zone: Zone) -> None:
    vetted = await vet_url("https://public.zone.test/doc.pdf", allow_private=False)
    assert vetted.addresses == ("93.184.215.14",)
    assert vetted.pinned()[0] == "https://93.184.215.14/doc.pdf"


@pytest.mark.parametrize(
    "name", ["missing.zone.test", "private.zone.test", "mixed.zone.test", "meta.zone.test", "nat64.zone.test", "sixtofour.zone.test",
             "sitelocal.zone.test"],
)  # fmt: skip
async def test_every_refused_host_gets_the_same_message(zone: Zone, name: str) -> None:
    message = await _refusal(f"https://{name}/doc.pdf")
    assert message == f"the host {name!r} does not resolve to a public address"


async def test_a_lookup_that_never_answers_is_refused_with_the_same_message_at_the_deadline(zone: Zone) -> None:
    started = time.monotonic()
    message = await _refusal("https://slow.never.test/doc.pdf", resolver=Resolver(timeout_seconds=0.5, max_concurrency=2))
    elapsed = time.monotonic() - started
    assert message == "the host 'slow.never.test' does not resolve to a public address"
    assert 0.45 <= elapsed < 1.5


async def test_lookups_run_on_their_own_bounded_pool_not_the_default_executor(zone: Zone) -> None:
    # more stuck lookups than the loop's default executor has threads (min(32, cpus + 4)): if they ran there, the
    # storage I/O and asyncio.to_thread calls of every request would wait behind them
    resolver = Resolver(timeout_seconds=1.5, max_concurrency=3)
    stuck = [asyncio.create_task(resolver.resolve(f"host{index}.never.test", 443)) for index in range(40)]
    assert await asyncio.to_thread(zone.wait_running, 3)
    started = time.monotonic()
    assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 1.0) == "free"
    assert time.monotonic() - started < 0.5
    assert await asyncio.gather(*stuck) == [[]] * 40  # every one refused at the deadline, none waited longer
    assert zone.most_running == 3  # never more threads than DNS_MAX_CONCURRENCY
    assert len(zone.calls) == 3  # the queued lookups were dropped at the deadline, never started


async def test_localhost_and_literals_never_reach_the_resolver(zone: Zone) -> None:
    for url in ("http://localhost/x", "http://a.localhost/x", "http://10.0.0.1/x", "http://[::1]/x"):
        await _refusal(url)
    assert zone.calls == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "only http and https URLs are allowed"),
        ("file:///etc/passwd", "only http and https URLs are allowed"),
        ("http://user:pw@example.com/x", "URLs with credentials are not allowed"),
        ("http:///nohost", "the URL has no host"),
        ("http://example.com:99999/x", "the URL cannot be parsed"),
    ],
)
async def test_what_is_wrong_with_the_url_itself_is_said(url: str, message: str) -> None:
    assert await _refusal(url) == message


# --- URLs in logs ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.example.com/cb?token=s3cr3t", "https://hooks.example.com/cb?[redacted]"),
        ("https://user:s3cr3t@hooks.example.com:8443/cb#s3cr3t", "https://hooks.example.com:8443/cb?[redacted]"),
        ("http://[2606:4700::1111]/a/b", "http://[2606:4700::1111]/a/b"),
        ("http://example.com:99999/x?token=s3cr3t", "<unparsable URL>"),
    ],
)
def test_redact_url_keeps_the_host_and_path_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown
