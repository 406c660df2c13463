"""Removing a run removes what the platform recorded of it (issue 14: "retention and DELETE cover the new records"), on
SQLite and PostgreSQL: ``DELETE /api/v1/runs/{id}`` and the RUN_RETENTION_DAYS purge erase the run's file records,
its uses of uploads and its recorded mark in the same transaction as the run, and clear an example's ``latest_run_id``
naming it; the upload retention erases the upload's file record. A completed run's files are recorded as it ends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from pipelex_server.store.common import utcnow
from pipelex_server.store.tables import file_runs, file_uses, files, runs, uploads
from tests.api.test_documents import EXTRACT_ONLY_BUNDLE, data_url, document_input, make_pdf
from tests.platform.test_files import SECRET, bearer, caller, fresh_callers, upload  # noqa: F401 (fixture)


@pytest.fixture
async def app(make_app: Any, database_url: str) -> Any:
    return await make_app(auth_mode="jwt", jwt_secret_key=SECRET, database_url=database_url, run_retention_days=1)


async def run_of(app: Any, user: str, method_id: str, inputs: dict[str, Any], run_id: str | None = None) -> str:
    body = {"method_id": f"{method_id}@draft", "inputs": inputs, **({"pipeline_run_id": run_id} if run_id else {})}
    answer = await app.client.post("/v1/execute", json=body, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    return answer.json()["pipeline_run_id"]


async def recorded(app: Any, user: str, run_id: str) -> dict[str, int]:
    """How many file records, uses and marks the store holds of the caller's run."""
    scope = caller(user)
    async with app.services.runs.repository.engine.connect() as connection:
        counts = {}
        for name, statement in (
            ("files", sa.select(sa.func.count()).where(files.c.caller_id == scope, files.c.run_id == run_id)),
            ("uses", sa.select(sa.func.count()).where(file_uses.c.caller_id == scope, file_uses.c.holder_id == run_id)),
            ("marks", sa.select(sa.func.count()).where(file_runs.c.caller_id == scope, file_runs.c.run_id == run_id)),
        ):
            counts[name] = (await connection.execute(statement)).scalar_one()
    return counts


async def method_with_example(app: Any, user: str, inputs: dict[str, Any]) -> tuple[str, str]:
    """A method of the caller, and the path of an example of it."""
    body = {"name": "Reader", "files": {"read.mthds": EXTRACT_ONLY_BUNDLE}}
    created = await app.client.post("/v1/methods", json=body, headers=bearer(user))
    assert created.status_code == 201, created.text
    method_id = created.json()["method_id"]
    example = await app.client.post(f"/v1/methods/{method_id}/examples", json={"name": "One", "inputs": inputs}, headers=bearer(user))
    assert example.status_code == 201, example.text
    return method_id, f"/v1/methods/{method_id}/examples/{example.json()['example_id']}"


async def record_latest(app: Any, user: str, example_path: str, run_id: str) -> None:
    answer = await app.client.put(f"{example_path}/latest-run", json={"run_id": run_id, "input_revision": 1}, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    assert (await app.client.get(example_path, headers=bearer(user))).json()["latest_run_id"] == run_id


async def test_delete_and_retention_remove_a_runs_records_and_clear_the_example(app: Any) -> None:
    user = "rm"
    inline_inputs = document_input(data_url(make_pdf("inline"), "application/pdf"))
    method_id, example_path = await method_with_example(app, user, inline_inputs)
    inline = await run_of(app, user, method_id, inline_inputs)
    uploaded = await upload(app, user, "report.pdf", make_pdf("uploaded"), "application/pdf")
    by_address = await run_of(app, user, method_id, document_input(uploaded.uri))
    await record_latest(app, user, example_path, inline)
    # another caller's run of the same public id, the latest of its own example: untouched by the first one's removal
    other_method, other_example = await method_with_example(app, "other", inline_inputs)
    await run_of(app, "other", other_method, inline_inputs, run_id=inline)
    await record_latest(app, "other", other_example, inline)

    # a completed run's files are recorded as it ends (an in-process execute answers once it has): no read first
    assert await recorded(app, user, inline) == {"files": 1, "uses": 0, "marks": 1}
    assert await recorded(app, user, by_address) == {"files": 0, "uses": 1, "marks": 1}

    # DELETE: gone in the same transaction as the run, not on a later list
    assert (await app.client.delete(f"/api/v1/runs/{inline}", headers=bearer(user))).status_code == 204
    assert await recorded(app, user, inline) == {"files": 0, "uses": 0, "marks": 0}
    assert (await app.client.get(example_path, headers=bearer(user))).json()["latest_run_id"] is None
    assert (await app.client.get(other_example, headers=bearer("other"))).json()["latest_run_id"] == inline
    assert await recorded(app, user, by_address) == {"files": 0, "uses": 1, "marks": 1}

    # RUN_RETENTION_DAYS: the purge removes the run's use and mark with it
    engine = app.services.runs.repository.engine
    long_ago = utcnow() - timedelta(days=3)
    async with engine.begin() as connection:
        await connection.execute(
            sa.update(runs).where(runs.c.caller_id == caller(user), runs.c.public_id == by_address).values(finished_at=long_ago)
        )
    assert await app.services.runs.retention.purge_expired() == [by_address]
    assert await recorded(app, user, by_address) == {"files": 0, "uses": 0, "marks": 0}
    detail = (await app.client.get(f"/v1/files/{uploaded.file_id}", headers=bearer(user))).json()
    assert detail["uses"]["items"] == []

    # the upload retention removes the upload's file record with the upload
    async with engine.begin() as connection:
        await connection.execute(sa.update(uploads).where(uploads.c.caller_id == caller(user)).values(created_at=long_ago))
    assert await app.services.uploads.purge_expired() == 1
    assert (await app.client.get(f"/v1/files/{uploaded.file_id}", headers=bearer(user))).status_code == 404
    assert (await app.client.get("/v1/files", headers=bearer(user))).json()["items"] == []


async def test_a_failing_end_listener_never_fails_the_run(app: Any) -> None:
    """Recording a run's files at its end is best effort: a failure there leaves the run COMPLETED, and a later read of
    its files records them."""

    async def broken(_ended: dict[str, Any]) -> None:
        raise RuntimeError("the file records are unavailable")

    listeners = app.services.runs.lifecycle.end_listeners
    listeners.insert(0, broken)
    listeners.remove(app.services.files.run_files.record_ended)
    inputs = document_input(data_url(make_pdf("best effort"), "application/pdf"))
    answer = await app.client.post(
        "/api/v1/pipeline/execute", json={"mthds_contents": [EXTRACT_ONLY_BUNDLE], "inputs": inputs}, headers=bearer("be")
    )
    assert answer.status_code == 200 and answer.json()["pipeline_state"] == "COMPLETED", answer.text
    run_id = answer.json()["pipeline_run_id"]
    assert await recorded(app, "be", run_id) == {"files": 0, "uses": 0, "marks": 0}
    assert (await app.client.get(f"/v1/runs/{run_id}/files", headers=bearer("be"))).status_code == 200
    assert await recorded(app, "be", run_id) == {"files": 1, "uses": 0, "marks": 1}
