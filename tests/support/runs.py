"""Helpers for background-run tests."""

from __future__ import annotations

import json
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
