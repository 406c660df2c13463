"""The run records the SDK reads, over the in-process app: the history (statuses, time range, signed cursor), one
run's detail, and a run's files (an input given by address, an inline input the run stored) with working links."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest
from pipelex_sdk.product_models import FilePage, RunDetail, RunFilesPage, RunPage

from tests.api.test_documents import EXTRACT_ONLY_BUNDLE, data_url, document_input, make_pdf
from tests.platform.test_files import SECRET, assert_problem, bearer, caller, fresh_callers, upload  # noqa: F401 (fixture)
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT


@pytest.fixture
async def jwt_app(make_app: Any, database_url: str) -> Any:
    return await make_app(auth_mode="jwt", jwt_secret_key=SECRET, database_url=database_url)


async def execute(app: Any, user: str, body: dict[str, Any]) -> str:
    run_id = f"pr-{uuid.uuid4().hex[:12]}"
    response = await app.client.post("/api/v1/pipeline/execute", json={"pipeline_run_id": run_id, **body}, headers=bearer(user))
    assert response.status_code == 200, response.text
    return run_id


async def test_history_detail_and_isolation(jwt_app: Any) -> None:
    first = await execute(jwt_app, "ann", {"mthds_contents": [SEED_BUNDLE], "inputs": {"text": SEED_TEXT}})
    second = await execute(jwt_app, "ann", {"mthds_contents": [SEED_BUNDLE], "inputs": {"text": SEED_TEXT}})
    page = RunPage.model_validate((await jwt_app.client.get("/v1/runs", params={"limit": 1}, headers=bearer("ann"))).json())
    assert [item.pipeline_run_id for item in page.items] == [second] and page.next_cursor
    assert page.items[0].status == "COMPLETED"
    rest = await jwt_app.client.get("/v1/runs", params={"limit": 1, "cursor": page.next_cursor}, headers=bearer("ann"))
    assert [item.pipeline_run_id for item in RunPage.model_validate(rest.json()).items] == [first]
    tampered = page.next_cursor[:-2] + "zz"
    assert_problem(await jwt_app.client.get("/v1/runs", params={"cursor": tampered}, headers=bearer("ann")), 400, "request.invalid")
    foreign = {"cursor": page.next_cursor, "status": "FAILED"}
    assert_problem(await jwt_app.client.get("/v1/runs", params=foreign, headers=bearer("ann")), 400, "request.invalid")

    failed = await jwt_app.client.get("/v1/runs", params=[("status", "FAILED"), ("status", "TIMED_OUT")], headers=bearer("ann"))
    assert RunPage.model_validate(failed.json()).items == []
    done = await jwt_app.client.get(
        "/v1/runs", params={"status": "COMPLETED", "created_from": "2000-01-01T00:00:00Z"}, headers=bearer("ann")
    )
    assert len(RunPage.model_validate(done.json()).items) == 2
    assert_problem(await jwt_app.client.get("/v1/runs", params={"status": "DONE"}, headers=bearer("ann")), 422, "request.invalid")
    assert_problem(await jwt_app.client.get("/v1/runs", params={"method_id": "mt_x@3"}, headers=bearer("ann")), 400, "request.invalid")
    assert_problem(await jwt_app.client.get("/v1/runs", params={"created_to": "yesterday"}, headers=bearer("ann")), 400, "request.invalid")
    by_method = await jwt_app.client.get("/v1/runs", params={"method_id": "mt_none"}, headers=bearer("ann"))
    assert RunPage.model_validate(by_method.json()) == RunPage(items=[], next_cursor=None)

    detail = RunDetail.model_validate((await jwt_app.client.get(f"/v1/runs/{first}", headers=bearer("ann"))).json())
    assert (detail.pipeline_run_id, detail.status, detail.mthds_contents, detail.inputs) == (
        first,
        "COMPLETED",
        [SEED_BUNDLE],
        {"text": SEED_TEXT},
    )
    assert detail.created_by_user_id == caller("ann") and detail.error is None
    for path in (f"/v1/runs/{first}", f"/v1/runs/{first}/files", "/v1/runs/nobody-has-this"):
        assert_problem(await jwt_app.client.get(path, headers=bearer("bo")), 404, "run.not_found")
    assert RunPage.model_validate((await jwt_app.client.get("/v1/runs", headers=bearer("bo"))).json()).items == []
    assert_problem(await jwt_app.client.get("/v1/files", params={"run_id": first}, headers=bearer("bo")), 404, "run.not_found")


async def test_a_runs_files_hold_its_inputs_with_links(jwt_app: Any) -> None:
    pdf = make_pdf("uploaded input")
    uploaded = await upload(jwt_app, "cy", "report.pdf", pdf, "application/pdf")
    by_address = await execute(jwt_app, "cy", {"mthds_contents": [EXTRACT_ONLY_BUNDLE], "inputs": document_input(uploaded.uri)})
    inline_pdf = make_pdf("inline input")
    inline = await execute(
        jwt_app, "cy", {"mthds_contents": [EXTRACT_ONLY_BUNDLE], "inputs": document_input(data_url(inline_pdf, "application/pdf"))}
    )

    page = RunFilesPage.model_validate((await jwt_app.client.get(f"/v1/runs/{by_address}/files", headers=bearer("cy"))).json())
    assert page.state == "listed" and page.next_cursor is None
    assert [(entry.mark, entry.input_name, entry.uri) for entry in page.inputs] == [("input", "doc", uploaded.uri)]
    assert page.inputs[0].file is not None and page.inputs[0].file.file_id == uploaded.file_id
    link = page.inputs[0].file.model_extra["url"]
    parts = urlsplit(link)
    assert (await jwt_app.client.get(f"{parts.path}?{parts.query}")).content == pdf
    # the run took the upload: it is one of the file's uses
    detail = (await jwt_app.client.get(f"/v1/files/{uploaded.file_id}", headers=bearer("cy"))).json()
    assert [(use["holder_type"], use["holder_id"]) for use in detail["uses"]["items"]] == [("run", by_address)]

    page = RunFilesPage.model_validate((await jwt_app.client.get(f"/v1/runs/{inline}/files", headers=bearer("cy"))).json())
    assert len(page.inputs) == 1 and page.inputs[0].file is not None
    stored = page.inputs[0]
    assert stored.uri.startswith(f"pipelex-storage://{caller('cy')}/runs/{inline}/") and stored.file.origin.run_id == inline
    parts = urlsplit(stored.file.model_extra["url"])
    assert (await jwt_app.client.get(f"{parts.path}?{parts.query}")).content == inline_pdf
    listed = FilePage.model_validate((await jwt_app.client.get("/v1/files", params={"run_id": inline}, headers=bearer("cy"))).json())
    assert [item.uri for item in listed.items] == [stored.uri]
    assert_problem(
        await jwt_app.client.get(f"/v1/runs/{inline}/files", params={"cursor": "x.y"}, headers=bearer("cy")), 400, "request.invalid"
    )


async def test_a_methods_history_and_a_deleted_runs_records(jwt_app: Any) -> None:
    created = await jwt_app.client.post("/v1/methods", json={"name": "Seed", "files": {"hello.mthds": SEED_BUNDLE}}, headers=bearer("dee"))
    assert created.status_code == 201, created.text
    method_id = created.json()["method_id"]
    executed = await jwt_app.client.post(
        "/v1/execute", json={"method_id": f"{method_id}@draft", "inputs": {"text": SEED_TEXT}}, headers=bearer("dee")
    )
    assert executed.status_code == 200, executed.text
    by_method = await execute(jwt_app, "dee", {"mthds_contents": [SEED_BUNDLE], "inputs": {"text": SEED_TEXT}})
    history = RunPage.model_validate((await jwt_app.client.get("/v1/runs", params={"method_id": method_id}, headers=bearer("dee"))).json())
    assert [(item.pipeline_run_id, item.method_version) for item in history.items] == [(executed.json()["pipeline_run_id"], "draft")]
    assert by_method not in [item.pipeline_run_id for item in history.items]
    detail = RunDetail.model_validate(
        (await jwt_app.client.get(f"/v1/runs/{history.items[0].pipeline_run_id}", headers=bearer("dee"))).json()
    )
    assert detail.method_id == method_id

    inline = await execute(
        jwt_app, "dee", {"mthds_contents": [EXTRACT_ONLY_BUNDLE], "inputs": document_input(data_url(make_pdf("gone"), "application/pdf"))}
    )
    listed = FilePage.model_validate((await jwt_app.client.get("/v1/files", params={"run_id": inline}, headers=bearer("dee"))).json())
    assert len(listed.items) == 1
    assert (await jwt_app.client.delete(f"/api/v1/runs/{inline}", headers=bearer("dee"))).status_code == 204
    remaining = FilePage.model_validate((await jwt_app.client.get("/v1/files", headers=bearer("dee"))).json())
    assert listed.items[0].file_id not in [item.file_id for item in remaining.items]
    assert_problem(await jwt_app.client.get("/v1/files", params={"run_id": inline}, headers=bearer("dee")), 404, "run.not_found")
