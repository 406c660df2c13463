"""The thinnest server around the runtime: what any server that runs pipelines in its own process must pay at least.

A raw ASGI app (no framework, no database, no auth, no validation, no run records) on uvicorn: at startup it boots the
runtime through this project's ``Engine`` (prepared home, lazy SDK packages, the same warm-up as ours), then:

- ``GET /ready``  200 once the runtime is booted and warm (503 before);
- ``POST /execute``  a JSON ``{"pipe_code", "mthds_contents", "inputs"}``: one live run through ``Engine.execute``
  (the library cache included), answered with the main stuff's content.

``relay`` is thinner still: no runtime; each request costs ``RELAY_CPU_MS`` of CPU (spent in 0.25 ms slices, the
event loop free between them, half before and half after the call) around one call to the LLM (``RELAY_TARGET``, a
fixed Responses request): how the burst's wall grows with a server's CPU per request, whatever spends it.

``bench/floors.py`` boots them to measure the floors of spawn → ready and of the burst. Not servers to use: they have
none of the checks that make ours one. Run as ``python -m uvicorn bench.floor_app:app`` (or ``:relay``) with the
server's environment (``DATA_DIR``, ``OPENAI_BASE_URL``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

state: dict[str, Any] = {}


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            from pipelex_server.engine.runtime import Engine
            from pipelex_server.fetch import Fetcher
            from pipelex_server.settings import Settings
            from pipelex_server.storage import make_object_store

            settings = Settings()
            store = make_object_store(backend="local", data_dir=settings.data_dir, s3_bucket=None, s3_endpoint_url=None, s3_region=None)
            fetcher = Fetcher(allow_private=False, max_bytes=1 << 20, timeout_seconds=10, max_concurrency=4, max_request_bytes=1 << 20)
            engine = Engine(settings, store=store, fetcher=fetcher)
            state.update(engine=engine, store=store, fetcher=fetcher)
            state["boot"] = asyncio.create_task(engine.start())  # ready when it ends, as ours (/ready polls it)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            engine = state.get("engine")
            if engine is not None:
                engine.stop()
                await state["fetcher"].aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _reply(send: Any, status: int, document: Any) -> None:
    body = json.dumps(document).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    engine = state["engine"]
    if scope["path"] == "/ready":
        ready = engine.ready.is_set() and engine.boot_error is None
        await _reply(send, 200 if ready else 503, {"ready": ready})
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    request = json.loads(b"".join(chunks))
    outcome = await engine.execute(
        pipe_code=request.get("pipe_code"),
        mthds_contents=request.get("mthds_contents"),
        inputs=request.get("inputs"),
        output_name=None,
        output_multiplicity=None,
        dynamic_output_concept_ref=None,
        dry_run=False,
        scope="floor",
        storage_scope="floor/runs",
        request_id=None,
    )
    root = outcome.pipe_output["working_memory"]["root"]
    await _reply(send, 200, {"state": "COMPLETED", "main": root[outcome.main_stuff_name]["content"]})


RELAY_BODY = {"model": "gpt-4o-mini", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Echo: hi"}]}]}


async def _spend(seconds: float) -> None:
    """CPU for ``seconds`` (thread time), in slices with the event loop free between them."""
    import time

    while seconds > 0:
        piece = min(seconds, 0.00025)
        end = time.thread_time() + piece
        while time.thread_time() < end:
            pass
        seconds -= piece
        await asyncio.sleep(0)


async def relay(scope: dict[str, Any], receive: Any, send: Any) -> None:
    import os

    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                import httpx

                limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
                state["client"] = httpx.AsyncClient(timeout=60, limits=limits)
                state["cpu_s"] = float(os.environ.get("RELAY_CPU_MS", "0")) / 1000
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await state["client"].aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/ready":
        await _reply(send, 200, {"ready": True})
        return
    while (await receive()).get("more_body"):
        pass
    await _spend(state["cpu_s"] / 2)
    answer = await state["client"].post(os.environ["RELAY_TARGET"], json=RELAY_BODY, headers={"Authorization": "Bearer x"})
    await _spend(state["cpu_s"] / 2)
    await _reply(send, answer.status_code, {"state": "COMPLETED" if answer.status_code == 200 else "FAILED"})
