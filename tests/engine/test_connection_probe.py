"""The provider client's closed-connection check answers as httpcore2's own: an idle open connection is kept, one the
server closed is seen as closed; every other stream attribute is untouched. Fails loudly if httpcore2 changes shape."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import pytest
from httpcore2._backends.anyio import AnyIOStream
from httpcore2._utils import is_socket_readable

from pipelex_server.engine.connection_probe import install_connection_probe


def test_the_pinned_sdk_sends_through_the_stream_the_patch_changes() -> None:
    # the OpenAI SDK's default client pools httpcore2 connections; their closed-connection check asks the stream for
    # "is_readable" (AsyncHTTP11Connection.has_expired), which the patch answers with httpcore2's own socket poll
    import httpcore2
    import openai
    from httpcore2._async import http11

    client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9")
    assert isinstance(client._client._transport._pool, httpcore2.AsyncConnectionPool)
    assert '"is_readable"' in inspect.getsource(http11.AsyncHTTP11Connection.has_expired)
    assert list(inspect.signature(is_socket_readable).parameters) == ["sock"]
    assert list(inspect.signature(AnyIOStream.get_extra_info).parameters) == ["self", "info"]


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, int, list[asyncio.StreamWriter], asyncio.Event]]:
    writers: list[asyncio.StreamWriter] = []
    accepted = asyncio.Event()

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        accepted.set()

    listening = await asyncio.start_server(accept, "127.0.0.1", 0)
    host, port = listening.sockets[0].getsockname()[:2]
    try:
        yield host, port, writers, accepted
    finally:
        for writer in writers:
            writer.close()
        listening.close()
        await listening.wait_closed()


async def _connected(server: tuple[str, int, list[asyncio.StreamWriter], asyncio.Event]) -> AnyIOStream:
    from httpcore2._backends.anyio import AnyIOBackend

    host, port, _writers, accepted = server
    stream = await AnyIOBackend().connect_tcp(host, port, timeout=5)
    await accepted.wait()
    return stream  # type: ignore[return-value]


async def test_an_open_idle_connection_is_not_readable_and_a_closed_one_is(server) -> None:
    install_connection_probe()
    stream = await _connected(server)
    try:
        assert stream.get_extra_info("is_readable") is False
        assert stream.get_extra_info("is_readable") is False  # asked again: the remembered socket
        closing = server[2][0]
        closing.close()  # the server closes the idle connection (on loopback its FIN is queued when the close returns)
        await closing.wait_closed()
        assert stream.get_extra_info("is_readable") is True
    finally:
        await stream.aclose()
    assert stream.get_extra_info("is_readable") is True  # our side closed too


async def test_other_attributes_answer_as_before(server) -> None:
    install_connection_probe()
    stream = await _connected(server)
    try:
        host, port = server[:2]
        assert stream.get_extra_info("server_addr")[:2] == (host, port)
        assert stream.get_extra_info("socket") is not None
        assert stream.get_extra_info("ssl_object") is None
        assert stream.get_extra_info("unknown") is None
    finally:
        await stream.aclose()


def test_installing_twice_patches_once() -> None:
    install_connection_probe()
    patched = AnyIOStream.get_extra_info
    install_connection_probe()
    assert AnyIOStream.get_extra_info is patched
