"""GET /api/v1/usage on SQLite and PostgreSQL: the caller's figures equal the sum of its run documents' usage."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.bundles import SEQUENCE_BUNDLE, seed_request

EXECUTE = "/api/v1/pipeline/execute"


class Usage:
    """An app with runs of two callers, named afresh for each test (the PostgreSQL database is shared by the session)."""

    def __init__(self, handle) -> None:
        self.client = handle.client
        self.alice = {"X-User-Id": f"alice-{uuid.uuid4().hex[:12]}"}
        self.bob = {"X-User-Id": f"bob-{uuid.uuid4().hex[:12]}"}


def _sum_tokens(documents: list[dict]) -> dict[str, int]:
    tokens: dict[str, int] = {}
    for document in documents:
        for category, count in ((document["usage"] or {}).get("tokens") or {}).items():
            tokens[category] = tokens.get(category, 0) + count
    return tokens


@pytest.fixture
async def usage_app(make_app, database_url):
    app = Usage(await make_app(database_url=database_url, trust_forwarded_identity_headers=True))
    sequence = {"mthds_contents": [SEQUENCE_BUNDLE], "inputs": {"note": {"concept": "KitchenNote", "content": "leeks"}}}
    for body in (seed_request(), seed_request(), sequence, seed_request(dry_run=True)):
        response = await app.client.post(EXECUTE, json=body, headers=app.alice)
        assert response.status_code == 200, response.text
    assert (await app.client.post(EXECUTE, json=seed_request(), headers=app.bob)).status_code == 200
    return app


async def _documents(client, headers) -> list[dict]:
    listing = (await client.get("/api/v1/runs", params={"limit": 200}, headers=headers)).json()
    return [(await client.get(f"/api/v1/runs/{item['pipeline_run_id']}", headers=headers)).json() for item in listing["runs"]]


async def test_usage_by_day_equals_the_sum_of_the_callers_run_documents(usage_app):
    documents = await _documents(usage_app.client, usage_app.alice)
    assert len(documents) == 4
    response = await usage_app.client.get("/api/v1/usage", headers=usage_app.alice)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["group_by"] == "day"
    expected_cost = sum(document["usage"]["cost_usd"] or 0 for document in documents)
    assert report["total"]["runs"] == 4
    assert report["total"]["tokens"] == _sum_tokens(documents)
    assert report["total"]["cost_usd"] == pytest.approx(expected_cost)
    assert report["total"]["tokens"]["input"] > 0 and expected_cost > 0
    (today,) = report["groups"]
    assert today["key"] == datetime.now(UTC).date().isoformat()
    assert {key: today[key] for key in ("runs", "tokens", "cost_usd")} == {
        key: report["total"][key] for key in ("runs", "tokens", "cost_usd")
    }


async def test_usage_by_pipe_code_and_by_model(usage_app):
    documents = await _documents(usage_app.client, usage_app.alice)
    by_pipe = (await usage_app.client.get("/api/v1/usage", params={"group_by": "pipe_code"}, headers=usage_app.alice)).json()
    groups = {group["key"]: group for group in by_pipe["groups"]}
    for pipe_code in {document["pipe_code"] for document in documents}:
        mine = [document for document in documents if document["pipe_code"] == pipe_code]
        assert groups[pipe_code]["runs"] == len(mine)
        assert groups[pipe_code]["tokens"] == _sum_tokens(mine)
        assert groups[pipe_code]["cost_usd"] == pytest.approx(sum(document["usage"]["cost_usd"] or 0 for document in mine))

    by_model = (await usage_app.client.get("/api/v1/usage", params={"group_by": "model"}, headers=usage_app.alice)).json()
    records = [record for document in documents for record in document["usage"]["by_pipe"]]
    models = {record["inference_model_name"] for record in records}
    assert {group["key"] for group in by_model["groups"]} == models
    assert sum(group["tokens"].get("input", 0) for group in by_model["groups"]) == _sum_tokens(documents)["input"]
    assert sum(group["cost_usd"] for group in by_model["groups"]) == pytest.approx(by_model["total"]["cost_usd"])


async def test_another_callers_runs_never_count(usage_app):
    bob = (await usage_app.client.get("/api/v1/usage", headers=usage_app.bob)).json()
    assert bob["total"]["runs"] == 1
    assert bob["total"]["tokens"] == _sum_tokens(await _documents(usage_app.client, usage_app.bob))
    carol = (await usage_app.client.get("/api/v1/usage", headers={"X-User-Id": "carol"})).json()
    assert carol["total"] == {"runs": 0, "tokens": {}, "cost_usd": 0, "unpriced_runs": 0}
    assert carol["groups"] == []


async def test_the_window_selects_runs_by_creation_time(usage_app):
    now = datetime.now(UTC)
    earlier = {"from": (now - timedelta(days=3)).isoformat(), "to": (now - timedelta(days=2)).isoformat()}
    assert (await usage_app.client.get("/api/v1/usage", params=earlier, headers=usage_app.alice)).json()["total"]["runs"] == 0
    around = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}
    report = (await usage_app.client.get("/api/v1/usage", params=around, headers=usage_app.alice)).json()
    assert report["total"]["runs"] == 4
    assert report["from"].endswith("Z") and report["to"].endswith("Z")


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "usage.invalid_window"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "usage.invalid_window"),
        ({"to": "0001-01-02T00:00:00Z"}, "usage.invalid_window"),
        ({"from": "yesterday"}, "request.invalid"),
        ({"group_by": "caller"}, "request.invalid"),
    ],
)
async def test_bad_parameters_are_422_problems(client, params, code):
    response = await client.get("/api/v1/usage", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
