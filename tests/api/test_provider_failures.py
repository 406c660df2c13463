"""Provider failures injected at the stub LLM, mapped by the runtime registry's codes onto HTTP statuses."""

import pytest

from tests.support.bundles import seed_request

EXECUTE = "/api/v1/pipeline/execute"


@pytest.mark.parametrize(
    ("status", "http_status", "code"),
    [
        (401, 502, "provider.credential_refused"),
        (429, 429, "provider.rate_limited"),
        (500, 502, "provider.failed"),
        (504, 504, "provider.timeout"),
        (400, 502, "provider.failed"),
        (422, 502, "provider.failed"),
    ],
)
async def test_provider_failure_becomes_a_problem_and_a_failed_run(client, stub, status, http_status, code):
    stub.configure(fail={"status": status, "count": None})
    response = await client.post(EXECUTE, json=seed_request())
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (response.status_code, problem["code"]) == (http_status, code), problem
    assert "Traceback" not in response.text
    run = (await client.get(f"/api/v1/runs/{problem['pipeline_run_id']}")).json()
    assert run["pipeline_state"] == "FAILED"
    assert run["error"]["code"] == code
    assert stub.stats()["failed_calls"] >= 1


async def test_transient_provider_failure_is_retried_by_the_sdk(client, stub):
    stub.configure(fail={"status": 500, "count": 1})
    response = await client.post(EXECUTE, json=seed_request())
    assert response.status_code == 200, response.text
    assert stub.stats()["total_calls"] == 2


async def test_run_timeout_ends_the_run_failed(make_app, stub):
    app = await make_app(run_timeout_seconds=0.5)
    stub.configure(timeout={"seconds": 5, "count": None})
    response = await app.client.post(EXECUTE, json=seed_request())
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "run.timed_out"
    run = (await app.client.get(f"/api/v1/runs/{problem['pipeline_run_id']}")).json()
    assert run["pipeline_state"] == "FAILED"
