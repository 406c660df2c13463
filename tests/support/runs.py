"""Helpers for background-run tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":") or ":" not in line:
                continue
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")
        if "event" in fields:
            events.append({"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])})
    return events


async def wait_for_end(client: httpx.AsyncClient, run_id: str, **kwargs: Any) -> dict[str, Any]:
    """Follow the run's event stream to its end (no polling, no sleeps), then return the run document."""
    response = await client.get(f"/api/v1/runs/{run_id}/events", **kwargs)
    assert response.status_code == 200, response.text
    events = parse_sse(response.text)
    assert events and events[-1]["event"] == "end", events
    run = await client.get(f"/api/v1/runs/{run_id}", **kwargs)
    assert run.status_code == 200
    return run.json()


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """Serve an app whose lifespan is already entered over real HTTP on loopback, in this event loop (streams and
    client disconnects behave as in production, and the test can still look inside the app). Yields its base URL."""
    import uvicorn

    from tests.support.server import free_port

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(), name=f"uvicorn-{port}")
    while not server.started:  # uvicorn offers no event to await
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
