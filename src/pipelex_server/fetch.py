"""The guarded fetcher for URL inputs: the server downloads a caller's document or image itself, under the SSRF guard.

Every hop (the first URL and each redirect) is vetted by ``netguard.vet_url`` and the connection goes to the vetted
address, so neither a redirect nor a DNS answer that changes after the check can reach a refused address. The body is
counted as it streams (after any content decoding, so a compression bomb stops at the limit), one deadline covers the
whole fetch, and every failure is a ``FetchRefused`` whose message can be returned to the API caller as it is.

A process has one fetcher (built at boot): at most ``max_concurrency`` downloads run at once (FETCH_MAX_CONCURRENCY;
the others wait for a slot, and their deadline starts when they get one), and the fetches of one request share a
``ByteBudget`` (FETCH_MAX_REQUEST_MIB over all its URL inputs together). Log lines never show a URL's query string.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from urllib.parse import unquote, urljoin, urlsplit

import filetype
import httpx

from pipelex_server.netguard import Resolver, UrlRefused, redact_client_logs, redact_url, vet_url
from pipelex_server.observability import metrics
from pipelex_server.observability.tracing_spans import fetch_span

logger = logging.getLogger(__name__)

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
FETCH_REASONS = frozenset({"url_refused", "too_large", "timeout", "http_status", "content_type", "too_many_redirects", "unreachable"})
OCTET_STREAM = "application/octet-stream"
MAX_FILENAME_LENGTH = 128
_DECODED_PIECE = 64 * 1024  # the most one decompression step may produce, whatever the ratio of the input
_MAX_CONTENT_ENCODINGS = 4
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_DISPOSITION_PARAM = re.compile(r";\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^;]*)")


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str
    final_url: str
    filename: str | None


class FetchRefused(Exception):
    """A fetch that did not produce content; ``message`` is one sentence safe to show the API caller."""

    def __init__(self, reason: str, message: str, *, http_status: int | None = None) -> None:
        if reason not in FETCH_REASONS:
            raise ValueError(f"unknown fetch refusal reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.http_status = http_status


class ByteBudget:
    """The bytes one request may download over all its URL inputs together (FETCH_MAX_REQUEST_MIB)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)

    def refusal(self, host: str) -> FetchRefused:
        return FetchRefused(
            "too_large",
            f"The content from {host} takes this request's downloads past the {self.limit}-byte limit on all its URL inputs "
            "together (FETCH_MAX_REQUEST_MIB).",
        )

    def take(self, count: int, host: str) -> None:
        self.used += count
        if self.used > self.limit:
            raise self.refusal(host)


class Fetcher:
    """Fetches http(s) URLs through the SSRF guard with size, time, redirect and concurrency limits; one shared client."""

    def __init__(
        self,
        *,
        allow_private: bool,
        max_bytes: int,
        timeout_seconds: float,
        max_redirects: int = 5,
        max_concurrency: int = 16,
        max_request_bytes: int = 128 * 1024 * 1024,
        resolver: Resolver | None = None,
        user_agent: str = "pipelex-server",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds
        self.max_redirects = max_redirects
        self.max_concurrency = max_concurrency
        self.max_request_bytes = max_request_bytes  # the default budget of one request (see ``ByteBudget``)
        self.resolver = resolver
        self._slots = asyncio.Semaphore(max_concurrency)
        redact_client_logs()
        self._client = httpx.AsyncClient(
            headers={"User-Agent": user_agent, "Accept": "*/*", "Accept-Encoding": "identity"},
            timeout=httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0)),
            # No pooled connection: the pool matches connections by address only, so a kept-alive TLS connection
            # verified for one host name could otherwise carry a request for another name on the same address.
            limits=httpx.Limits(max_keepalive_connections=0),
            follow_redirects=False,
            trust_env=False,
            verify=ssl_context if ssl_context is not None else True,
            # A jar that keeps nothing: one fetch must never carry cookies another server set during an earlier one.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    @fetch_span  # one span per URL fetched (docs/tracing.md)
    async def fetch(self, url: str, *, accept: Callable[[str], bool] | None = None, budget: ByteBudget | None = None) -> Fetched:
        """Download ``url``; ``accept`` vets the media type; ``budget`` is shared by the fetches of one request.
        Waits for one of the ``max_concurrency`` slots first. Raises ``FetchRefused``."""
        hop = _Hop(url)
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    fetched = await self._fetch(hop, accept, budget)
                metrics.url_fetch("ok")
                return fetched
            except TimeoutError:
                refusal = FetchRefused("timeout", f"Fetching from {hop.host} took longer than {self.timeout_seconds:g} seconds.")
                logger.info("fetch of %s refused (%s): %s", redact_url(url), refusal.reason, refusal.message)
                metrics.url_fetch(refusal.reason)
                raise refusal from None
            except FetchRefused as exc:
                logger.info("fetch of %s refused (%s): %s", redact_url(url), exc.reason, exc.message)
                metrics.url_fetch(exc.reason)
                raise

    async def _fetch(self, hop: _Hop, accept: Callable[[str], bool] | None, budget: ByteBudget | None) -> Fetched:
        redirects = 0
        while True:
            try:
                vetted = await vet_url(hop.url, allow_private=self.allow_private, resolver=self.resolver)
            except UrlRefused as exc:
                if redirects:
                    raise FetchRefused("url_refused", f"{hop.previous_host} redirected to a URL that was refused: {exc}.") from exc
                raise FetchRefused("url_refused", f"The URL was refused: {exc}.") from exc
            pinned_url, headers, extensions = vetted.pinned()
            try:
                request = self._client.build_request("GET", pinned_url, headers=headers, extensions=extensions)
            except httpx.InvalidURL as exc:
                raise FetchRefused("url_refused", f"The URL for {hop.host} cannot be requested.") from exc
            response = await self._send(request, hop)
            try:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location:
                    if redirects >= self.max_redirects:
                        raise FetchRefused("too_many_redirects", f"{hop.host} redirected more than {self.max_redirects} times.")
                    try:
                        target = urljoin(hop.url, location.strip())
                    except ValueError as exc:
                        raise FetchRefused("url_refused", f"{hop.host} redirected to a URL that cannot be parsed.") from exc
                    redirects += 1
                    hop.move_to(target)
                    continue
                return await self._receive(response, hop, accept, budget)
            finally:
                await response.aclose()

    async def _send(self, request: httpx.Request, hop: _Hop) -> httpx.Response:
        try:
            return await self._client.send(request, stream=True, follow_redirects=False)
        except httpx.TimeoutException as exc:
            raise FetchRefused("timeout", f"{hop.host} did not answer within {self.timeout_seconds:g} seconds.") from exc
        except httpx.HTTPError as exc:
            raise FetchRefused("unreachable", f"Could not connect to {hop.host}.") from exc

    async def _receive(
        self, response: httpx.Response, hop: _Hop, accept: Callable[[str], bool] | None, budget: ByteBudget | None
    ) -> Fetched:
        if not response.is_success:
            raise FetchRefused("http_status", f"{hop.host} answered HTTP {response.status_code}.", http_status=response.status_code)
        declared = _media_type(response.headers.get("content-type", ""))
        if declared and declared != OCTET_STREAM:
            self._check_accepted(declared, hop, accept)
        length = response.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > self.max_bytes:
            raise FetchRefused("too_large", f"The content from {hop.host} is larger than the {self.max_bytes}-byte limit.")
        if length.isdigit() and budget is not None and int(length) > budget.remaining:
            raise budget.refusal(hop.host)
        data = await self._read_body(response, hop, budget)
        content_type = declared
        if not content_type or content_type == OCTET_STREAM:
            content_type = filetype.guess_mime(data) if data else None
            content_type = (content_type or OCTET_STREAM).lower()
            self._check_accepted(content_type, hop, accept)
        return Fetched(
            data=data,
            content_type=content_type,
            final_url=hop.url,
            filename=_filename(response.headers.get("content-disposition"), hop.url),
        )

    def _check_accepted(self, content_type: str, hop: _Hop, accept: Callable[[str], bool] | None) -> None:
        if accept is not None and not accept(content_type):
            raise FetchRefused("content_type", f"The content from {hop.host} has the type {content_type!r}, which is not accepted here.")

    async def _read_body(self, response: httpx.Response, hop: _Hop, budget: ByteBudget | None) -> bytes:
        decoders = _decoders(response.headers.get("content-encoding", ""), hop)
        body = bytearray()
        try:
            async for piece in _decoded(response.aiter_raw(), decoders):
                body += piece
                if len(body) > self.max_bytes:
                    raise FetchRefused("too_large", f"The content from {hop.host} is larger than the {self.max_bytes}-byte limit.")
                if budget is not None:
                    budget.take(len(piece), hop.host)
        except httpx.TimeoutException as exc:
            raise FetchRefused("timeout", f"{hop.host} stopped sending for longer than {self.timeout_seconds:g} seconds.") from exc
        except httpx.HTTPError as exc:
            raise FetchRefused("unreachable", f"The connection to {hop.host} failed during the download.") from exc
        except zlib.error as exc:
            raise FetchRefused("unreachable", f"The content from {hop.host} could not be decoded.") from exc
        if any(not decoder.complete for decoder in decoders):
            raise FetchRefused("unreachable", f"The content from {hop.host} ended before its compressed stream did.")
        return bytes(body)


class _Hop:
    """The caller-visible URL being fetched (never the pinned address) and the host it names."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.host = _host_of(url)
        self.previous_host = self.host

    def move_to(self, url: str) -> None:
        self.previous_host = self.host
        self.url = url
        self.host = _host_of(url)


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).hostname or "the server"
    except ValueError:
        return "the server"


def _media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


class _Inflater:
    """Incremental gzip/deflate decoding that never produces more than ``_DECODED_PIECE`` bytes in one step."""

    def __init__(self, encoding: str) -> None:
        self._raw_fallback = encoding == "deflate"  # "deflate" is zlib-wrapped per the RFC, raw from some servers
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS)
        self._fed = False

    @property
    def complete(self) -> bool:
        """True unless the input started a compressed stream that did not end."""
        return self._inflater.eof or not self._fed

    def feed(self, data: bytes) -> Iterator[bytes]:
        self._fed = self._fed or bool(data)
        while True:
            try:
                piece = self._inflater.decompress(data, _DECODED_PIECE)
            except zlib.error:
                if not self._raw_fallback:
                    raise
                self._raw_fallback = False
                self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self._raw_fallback = False
            data = self._inflater.unconsumed_tail
            if piece:
                yield piece
            if not data and len(piece) < _DECODED_PIECE:
                return

    def finish(self) -> Iterator[bytes]:
        yield from self.feed(b"")


def _decoders(header: str, hop: _Hop) -> list[_Inflater]:
    """The decoders to apply, outermost first, for a Content-Encoding header."""
    encodings = [token.strip().lower() for token in header.split(",") if token.strip() and token.strip().lower() != "identity"]
    unsupported = [encoding for encoding in encodings if encoding not in ("gzip", "x-gzip", "deflate")]
    if unsupported or len(encodings) > _MAX_CONTENT_ENCODINGS:
        named = unsupported[0] if unsupported else header.strip()
        raise FetchRefused("content_type", f"The content from {hop.host} uses the unsupported content encoding {named!r}.")
    return [_Inflater(encoding) for encoding in reversed(encodings)]


def _through(decoders: list[_Inflater], data: bytes) -> Iterator[bytes]:
    if not decoders:
        if data:
            yield data
        return
    for piece in decoders[0].feed(data):
        yield from _through(decoders[1:], piece)


async def _decoded(raw: AsyncIterator[bytes], decoders: list[_Inflater]) -> AsyncIterator[bytes]:
    """The decoded body in bounded pieces, from the raw (still encoded) byte stream."""
    async for chunk in raw:
        for piece in _through(decoders, chunk):
            yield piece
    for index, decoder in enumerate(decoders):
        for flushed in decoder.finish():
            for piece in _through(decoders[index + 1 :], flushed):
                yield piece


def _disposition_filename(header: str | None) -> str | None:
    """The file name of a Content-Disposition header: ``filename*`` (RFC 5987) first, else ``filename``."""
    if not header:
        return None
    params: dict[str, str] = {}
    for match in _DISPOSITION_PARAM.finditer(header):
        name, value = match.group(1).lower(), match.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(name, value)
    extended = params.get("filename*")
    if extended and extended.count("'") >= 2:
        charset, _language, encoded = extended.split("'", 2)
        try:
            return unquote(encoded, encoding=charset or "utf-8", errors="replace")
        except LookupError:
            return unquote(encoded, errors="replace")
    return params.get("filename")


def sanitize_filename(name: str | None) -> str | None:
    """The last path segment of ``name`` with only [A-Za-z0-9._-] (others become '_'), no leading dots, at most 128 chars."""
    if not name:
        return None
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE_FILENAME_CHARS.sub("_", name).lstrip(".")
    if len(name) > MAX_FILENAME_LENGTH:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= 16:
            name = f"{stem[: MAX_FILENAME_LENGTH - len(extension) - 1]}.{extension}"
        else:
            name = name[:MAX_FILENAME_LENGTH]
    return name or None


def _filename(disposition: str | None, final_url: str) -> str | None:
    named = sanitize_filename(_disposition_filename(disposition))
    if named:
        return named
    try:
        path = urlsplit(final_url).path
    except ValueError:
        return None
    return sanitize_filename(unquote(path.rsplit("/", 1)[-1]))
