"""The guarded fetcher against a real file server on loopback: types, names, redirects, limits, refusals."""

from __future__ import annotations

import asyncio
import gzip
import logging
import socket
import struct
import time
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from pipelex_server.fetch import ByteBudget, Fetched, Fetcher, FetchRefused
from tests.support.fileserver import Exchange, FileServer, TestTLS

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")


PNG = _png()

FetcherFactory = Callable[..., Fetcher]


@pytest.fixture(scope="module")
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


@pytest.fixture
async def make_fetcher() -> AsyncIterator[FetcherFactory]:
    made: list[Fetcher] = []

    def make(**overrides: object) -> Fetcher:
        options: dict[str, object] = {"allow_private": True, "max_bytes": 1 << 20, "timeout_seconds": 2.0}
        options.update(overrides)
        fetcher = Fetcher(**options)  # type: ignore[arg-type]
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.aclose()


@pytest.fixture
def fetcher(make_fetcher: FetcherFactory) -> Fetcher:
    return make_fetcher()


async def refused(fetcher: Fetcher, url: str, **kwargs: object) -> FetchRefused:
    with pytest.raises(FetchRefused) as caught:
        await fetcher.fetch(url, **kwargs)  # type: ignore[arg-type]
    return caught.value


# --- content -----------------------------------------------------------------------------------------------------------


async def test_pdf_and_png_come_back_with_their_types_and_names(files: FileServer, fetcher: Fetcher) -> None:
    files.add("/docs/report.pdf", PDF, "Application/PDF; charset=binary")
    files.add("/img/pixel.png", PNG, "image/png")

    pdf = await fetcher.fetch(files.url("/docs/report.pdf"))
    png = await fetcher.fetch(files.url("/img/pixel.png?size=1"))

    assert pdf == Fetched(data=PDF, content_type="application/pdf", final_url=files.url("/docs/report.pdf"), filename="report.pdf")
    assert png == Fetched(data=PNG, content_type="image/png", final_url=files.url("/img/pixel.png?size=1"), filename="pixel.png")
    request = files.requests("/docs/report.pdf")[-1]
    assert request.headers["accept-encoding"] == "identity"
    assert request.headers["user-agent"] == "pipelex-server"
    assert request.headers["host"] == f"127.0.0.1:{files.port}"


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (None, PNG, "image/png"),
        ("application/octet-stream", PDF, "application/pdf"),
        (None, b"just some bytes", "application/octet-stream"),
    ],
)
async def test_a_missing_or_generic_type_is_sniffed(
    files: FileServer, fetcher: Fetcher, content_type: str | None, body: bytes, expected: str
) -> None:
    files.add("/sniff", body, content_type)
    fetched = await fetcher.fetch(files.url("/sniff"))
    assert (fetched.content_type, fetched.data) == (expected, body)


async def test_the_filename_comes_from_content_disposition_then_from_the_path(files: FileServer, fetcher: Fetcher) -> None:
    files.add("/download", PDF, "application/pdf", headers={"Content-Disposition": 'attachment; filename="Q3 report.pdf"'})
    files.add("/download2", PDF, "application/pdf", headers={"Content-Disposition": "attachment; filename=\"fallback.pdf\"; filename*=UTF-8''na%C3%AFve.pdf"})  # fmt: skip
    files.add("/files/my%20notes.pdf", PDF, "application/pdf")
    files.add("/folder/", PDF, "application/pdf")

    assert (await fetcher.fetch(files.url("/download"))).filename == "Q3_report.pdf"
    assert (await fetcher.fetch(files.url("/download2"))).filename == "na_ve.pdf"
    assert (await fetcher.fetch(files.url("/files/my%20notes.pdf"))).filename == "my_notes.pdf"
    assert (await fetcher.fetch(files.url("/folder/"))).filename is None


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ('attachment; filename="../../etc/passwd"', "passwd"),
        ("attachment; filename*=UTF-8''a%20b%00.pdf", "a_b_.pdf"),
        ('attachment; filename="..\\\\..\\\\windows\\\\win.ini"', "win.ini"),
        ('attachment; filename="...hidden"', "hidden"),
        ('attachment; filename="' + "x" * 300 + '.pdf"', "x" * 124 + ".pdf"),
        ('attachment; filename="..."', "hostile"),  # nothing left: the name comes from the path instead
    ],
)
async def test_a_hostile_filename_is_sanitized(files: FileServer, fetcher: Fetcher, disposition: str, expected: str | None) -> None:
    files.add("/hostile", PDF, "application/pdf", headers={"Content-Disposition": disposition})
    assert (await fetcher.fetch(files.url("/hostile"))).filename == expected


async def test_a_hostile_path_segment_is_sanitized(files: FileServer, fetcher: Fetcher) -> None:
    files.add("/x/a%20b%00..%2F..%2Fetc%2Fpasswd", PDF, "application/pdf")
    fetched = await fetcher.fetch(files.url("/x/a%20b%00..%2F..%2Fetc%2Fpasswd"))
    assert fetched.filename == "passwd"


@pytest.mark.parametrize("encoding", ["gzip", "deflate-zlib", "deflate-raw"])
async def test_a_compressed_body_sent_despite_identity_is_decoded(files: FileServer, fetcher: Fetcher, encoding: str) -> None:
    if encoding == "gzip":
        body = gzip.compress(PDF)
    else:
        compressor = zlib.compressobj(wbits=zlib.MAX_WBITS if encoding == "deflate-zlib" else -zlib.MAX_WBITS)
        body = compressor.compress(PDF) + compressor.flush()
    files.add("/compressed.pdf", body, "application/pdf", headers={"Content-Encoding": encoding.split("-")[0]})
    fetched = await fetcher.fetch(files.url("/compressed.pdf"))
    assert fetched.data == PDF


async def test_a_truncated_compressed_body_is_refused(files: FileServer, fetcher: Fetcher) -> None:
    files.add("/truncated.pdf", gzip.compress(PDF * 50)[:-40], "application/pdf", headers={"Content-Encoding": "gzip"})
    error = await refused(fetcher, files.url("/truncated.pdf"))
    assert error.reason == "unreachable"


async def test_cookies_are_not_carried_from_one_fetch_to_the_next(files: FileServer, fetcher: Fetcher) -> None:
    files.add("/sets-cookie", PDF, "application/pdf", headers={"Set-Cookie": "session=secret; Path=/"})
    files.add("/after-cookie", PDF, "application/pdf")
    await fetcher.fetch(files.url("/sets-cookie"))
    await fetcher.fetch(files.url("/after-cookie"))
    assert "cookie" not in files.requests("/after-cookie")[-1].headers


# --- redirects ---------------------------------------------------------------------------------------------------------


async def test_a_redirect_chain_is_followed_and_final_url_names_the_host(files: FileServer, fetcher: Fetcher) -> None:
    files.redirect("/chain/1", "2", status=301)  # relative to /chain/1
    files.redirect("/chain/2", "/chain/3", status=303)
    files.redirect("/chain/3", files.url("/chain/4", host="localhost"), status=307)
    files.redirect("/chain/4", "/chain/final.pdf", status=308)
    files.add("/chain/final.pdf", PDF, "application/pdf")

    fetched = await fetcher.fetch(files.url("/chain/1", host="localhost"))

    assert fetched.final_url == files.url("/chain/final.pdf", host="localhost")
    assert fetched.data == PDF and fetched.filename == "final.pdf"
    assert [files.hits(f"/chain/{step}") for step in ("1", "2", "3", "4", "final.pdf")] == [1, 1, 1, 1, 1]
    assert files.requests("/chain/final.pdf")[-1].headers["host"] == f"localhost:{files.port}"


async def test_more_redirects_than_allowed_are_refused(files: FileServer, make_fetcher: FetcherFactory) -> None:
    for step in range(6):
        files.redirect(f"/hops/{step}", f"/hops/{step + 1}")
    files.add("/hops/6", PDF, "application/pdf")
    fetcher = make_fetcher(max_redirects=5)

    assert (await fetcher.fetch(files.url("/hops/1"))).final_url == files.url("/hops/6")  # exactly five redirects
    error = await refused(fetcher, files.url("/hops/0"))  # six

    assert error.reason == "too_many_redirects"
    assert files.hits("/hops/6") == 1


async def test_a_redirect_to_the_metadata_address_is_refused_before_connecting(files: FileServer, fetcher: Fetcher) -> None:
    files.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")
    started = time.monotonic()
    error = await refused(fetcher, files.url("/to-metadata"))
    assert error.reason == "url_refused"  # a connection attempt would end as unreachable or timeout instead
    assert (
        error.message == "127.0.0.1 redirected to a URL that was refused: the host '169.254.169.254' does not resolve to a public address."
    )
    assert time.monotonic() - started < 1.0


async def test_a_redirect_to_a_file_url_is_refused(files: FileServer, fetcher: Fetcher) -> None:
    files.redirect("/to-file", "file:///etc/passwd")
    error = await refused(fetcher, files.url("/to-file"))
    assert error.reason == "url_refused"
    assert "root:" not in error.message


# --- size --------------------------------------------------------------------------------------------------------------


async def test_a_declared_length_over_the_limit_is_refused_before_reading(files: FileServer, make_fetcher: FetcherFactory) -> None:
    # The body would take 5 s to arrive and the deadline is 1 s: only a refusal on the header answers too_large.
    files.drip("/declared-large", chunk=b"x" * 100, count=100, interval=0.05)
    fetcher = make_fetcher(max_bytes=1000, timeout_seconds=1.0)
    started = time.monotonic()
    error = await refused(fetcher, files.url("/declared-large"))
    assert error.reason == "too_large"
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked"])
async def test_an_oversized_body_stops_the_download(files: FileServer, make_fetcher: FetcherFactory, content_length: bool) -> None:
    size = 64 << 20
    path = f"/large-{content_length}"
    files.large(path, size, content_length=content_length)
    fetcher = make_fetcher(max_bytes=1 << 20)

    error = await refused(fetcher, files.url(path))

    assert error.reason == "too_large"
    served = files.wait_served(path)[-1]
    assert not served.completed and served.body_bytes_sent < size  # the client hung up instead of reading it all


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked"])
async def test_the_limit_is_inclusive(files: FileServer, make_fetcher: FetcherFactory, content_length: bool) -> None:
    files.large(f"/exact-{content_length}", 200_000, content_length=content_length)
    files.large(f"/over-{content_length}", 200_001, content_length=content_length)
    fetcher = make_fetcher(max_bytes=200_000)
    assert len((await fetcher.fetch(files.url(f"/exact-{content_length}"))).data) == 200_000
    assert (await refused(fetcher, files.url(f"/over-{content_length}"))).reason == "too_large"


async def test_a_gzip_bomb_is_stopped_by_the_decoded_size(files: FileServer, make_fetcher: FetcherFactory) -> None:
    decoded_size = 32 << 20
    encoded_size = files.gzip_bomb("/bomb", decoded_size)
    max_bytes = 256 << 10
    assert encoded_size < max_bytes  # the encoded body alone passes the limit
    fetcher = make_fetcher(max_bytes=max_bytes)

    tracemalloc.start()
    try:
        error = await refused(fetcher, files.url("/bomb"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert error.reason == "too_large"
    assert peak < 4 << 20, f"decoding peaked at {peak} bytes"  # never decoded a large piece at once


# --- time, status, type, reachability ------------------------------------------------------------------------------


async def test_a_slow_drip_hits_the_overall_deadline(files: FileServer, make_fetcher: FetcherFactory) -> None:
    # Every piece arrives well within the per-read timeout; only the overall deadline stops it.
    files.drip("/drip", chunk=b"." * 10, count=40, interval=0.05)
    fetcher = make_fetcher(timeout_seconds=0.3)
    started = time.monotonic()
    error = await refused(fetcher, files.url("/drip"))
    elapsed = time.monotonic() - started
    assert error.reason == "timeout"
    assert 0.25 < elapsed < 0.8


async def test_the_deadline_covers_the_whole_redirect_chain(files: FileServer, make_fetcher: FetcherFactory) -> None:
    def slow_redirect(target: str) -> Callable[[Exchange], None]:
        def answer(exchange: Exchange) -> None:
            if not exchange.wait(0.12):
                exchange.start(302, [("Location", target)], length=0)

        return answer

    for step in range(4):
        files.route(f"/slow-hop/{step}", slow_redirect(f"/slow-hop/{step + 1}"))
    files.add("/slow-hop/4", PDF, "application/pdf")
    fetcher = make_fetcher(timeout_seconds=0.3)

    error = await refused(fetcher, files.url("/slow-hop/0"))

    assert error.reason == "timeout"
    assert files.hits("/slow-hop/4") == 0


@pytest.mark.parametrize("status", [404, 500])
async def test_an_error_status_is_refused_with_the_status(files: FileServer, fetcher: Fetcher, status: int) -> None:
    files.add(f"/status-{status}", b"nope", "text/plain", status=status)
    error = await refused(fetcher, files.url(f"/status-{status}"))
    assert (error.reason, error.http_status) == ("http_status", status)
    assert str(status) in error.message


async def test_an_unaccepted_type_is_refused_and_named(files: FileServer, fetcher: Fetcher) -> None:
    files.add("/page.html", b"<html></html>", "text/html; charset=utf-8")
    files.add("/untyped-pdf", PDF, None)

    def only_images(content_type: str) -> bool:
        return content_type.startswith("image/")

    error = await refused(fetcher, files.url("/page.html"), accept=only_images)
    assert error.reason == "content_type" and "text/html" in error.message
    sniffed = await refused(fetcher, files.url("/untyped-pdf"), accept=only_images)
    assert sniffed.reason == "content_type" and "application/pdf" in sniffed.message
    files.add("/pixel.png", PNG, None)
    assert (await fetcher.fetch(files.url("/pixel.png"), accept=only_images)).content_type == "image/png"


async def test_a_closed_port_is_unreachable(fetcher: Fetcher) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = await refused(fetcher, f"http://127.0.0.1:{port}/doc.pdf")
    assert error.reason == "unreachable"


# --- TLS ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TestTLS:
    return TestTLS.create(tmp_path_factory.mktemp("tls"), names=("localhost",))


@pytest.fixture(scope="module")
def tls_files(tls: TestTLS) -> Iterator[FileServer]:
    with FileServer(tls=tls) as server:
        server.add("/secure.pdf", PDF, "application/pdf")
        yield server


async def test_https_verifies_the_certificate_against_the_url_host(
    tls: TestTLS, tls_files: FileServer, make_fetcher: FetcherFactory
) -> None:
    trusting = make_fetcher(ssl_context=tls.client_context())
    fetched = await trusting.fetch(tls_files.url("/secure.pdf", host="localhost"))  # connected to 127.0.0.1, verified as localhost
    assert fetched.data == PDF and fetched.final_url == tls_files.url("/secure.pdf", host="localhost")

    mismatch = await refused(trusting, tls_files.url("/secure.pdf", host="127.0.0.1"))  # the certificate names localhost only
    untrusted = await refused(make_fetcher(), tls_files.url("/secure.pdf", host="localhost"))  # default trust store
    assert (mismatch.reason, untrusted.reason) == ("unreachable", "unreachable")


# --- private hosts refused ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_loopback_url_is_refused_before_any_request(files: FileServer, make_fetcher: FetcherFactory, host: str) -> None:
    files.add("/private.pdf", PDF, "application/pdf")
    files.reset()
    fetcher = make_fetcher(allow_private=False)
    error = await refused(fetcher, files.url("/private.pdf", host=host))
    assert error.reason == "url_refused"
    assert (files.hits("/private.pdf"), files.connections_accepted) == (0, 0)


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1/doc.pdf", "http://user:pw@example.com/doc.pdf", "ftp://example.com/doc.pdf", "file:///etc/passwd", "http:///nohost"],
)
async def test_private_credentialed_and_non_http_urls_are_refused(make_fetcher: FetcherFactory, url: str) -> None:
    error = await refused(make_fetcher(allow_private=False), url)
    assert error.reason == "url_refused"
    assert "pw" not in error.message


def test_the_support_server_serves_a_file_from_disk(tmp_path: Path, files: FileServer) -> None:
    """The helper other tests use to serve PDFs and images: typed from the suffix."""
    (tmp_path / "scan.png").write_bytes(PNG)
    files.add_file("/disk/scan.png", tmp_path / "scan.png")
    response = httpx.get(files.url("/disk/scan.png"), trust_env=False)
    assert (response.headers["content-type"], response.content) == ("image/png", PNG)


# --- concurrency and the per-request budget ----------------------------------------------------------------------------


async def test_at_most_max_concurrency_downloads_run_at_once(files: FileServer, make_fetcher: FetcherFactory) -> None:
    gate = files.hold("/held.pdf", PDF, "application/pdf")
    fetcher = make_fetcher(max_concurrency=3)
    fetches = [asyncio.create_task(fetcher.fetch(files.url(f"/held.pdf?copy={index}"))) for index in range(8)]
    try:
        assert await asyncio.to_thread(gate.wait_held, 3)
        # the other five wait for a slot: none reaches the server while three are held
        assert not await asyncio.to_thread(gate.wait_held, 4, 0.5)
        assert gate.arrived == 3
    finally:
        gate.open()
    results = await asyncio.gather(*fetches)
    assert [fetched.data for fetched in results] == [PDF] * 8
    assert (gate.arrived, gate.most_held) == (8, 3)


async def test_the_deadline_starts_when_a_slot_is_free(files: FileServer, make_fetcher: FetcherFactory) -> None:
    # one slot, a 1 s deadline, and downloads of 0.6 s each: the second waits 0.6 s, then has its own 1 s
    files.drip("/slowish.bin", chunk=b"x", count=3, interval=0.2)
    fetcher = make_fetcher(max_concurrency=1, timeout_seconds=1.0)
    first, second = await asyncio.gather(fetcher.fetch(files.url("/slowish.bin?n=1")), fetcher.fetch(files.url("/slowish.bin?n=2")))
    assert first.data == second.data == b"xxx"


async def test_a_request_budget_is_shared_by_its_fetches(files: FileServer, fetcher: Fetcher) -> None:
    files.add("/part.bin", b"a" * 100_000)
    files.large("/streamed.bin", 100_000, content_length=False)
    budget = ByteBudget(250_000)
    await fetcher.fetch(files.url("/part.bin?n=1"), budget=budget)
    await fetcher.fetch(files.url("/part.bin?n=2"), budget=budget)
    assert budget.used == 200_000
    files.reset()
    declared = await refused(fetcher, files.url("/part.bin?n=3"), budget=budget)  # 100 000 declared > 50 000 left
    streamed = await refused(fetcher, files.url("/streamed.bin"), budget=budget)  # chunked: stopped while it streams
    assert (declared.reason, streamed.reason) == ("too_large", "too_large")
    assert "FETCH_MAX_REQUEST_MIB" in declared.message and "250000-byte" in declared.message
    assert budget.used > budget.limit  # what the refused stream brought in is counted


# --- logs --------------------------------------------------------------------------------------------------------------


async def test_a_refused_fetch_is_logged_without_its_query_string(
    files: FileServer, fetcher: Fetcher, caplog: pytest.LogCaptureFixture
) -> None:
    files.add("/private-report.pdf", b"gone", "text/plain", status=404)
    caplog.set_level(logging.INFO, logger="httpx")  # the HTTP client's own request lines, as an operator may enable them
    with caplog.at_level(logging.INFO, logger="pipelex_server.fetch"):
        await refused(fetcher, files.url("/private-report.pdf?token=s3cr3t-fetch-token&sig=abc"))
        await refused(fetcher, "http://user:pw-s3cr3t@example.com/x?token=s3cr3t-fetch-token")
    assert "s3cr3t" not in caplog.text
    assert f"{files.url('/private-report.pdf')}?[redacted]" in caplog.text
    assert "HTTP Request: GET http://127.0.0.1" in caplog.text
