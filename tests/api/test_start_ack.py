"""/start's acknowledgement: checks that passed are remembered (engine/check_verdicts.py) and runs not started yet let
pending acks go first (runs/priority.py). Refusals are unchanged, a changed method is never answered from an older
verdict, and concurrent starts of one and of many methods each get their own output."""

from __future__ import annotations

import asyncio
import json

from pipelex_server.app import START_PATHS
from pipelex_server.engine.check_verdicts import CheckVerdicts
from pipelex_server.engine.library_cache import LibraryCache
from pipelex_server.runs.priority import AckPriority
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT, main_content, unique_bundle
from tests.support.runs import wait_for_end

START = "/api/v1/pipeline/start"


def _seed(text: str, bundle: str = SEED_BUNDLE) -> dict:
    return {"pipe_code": "summarize", "mthds_contents": [bundle], "inputs": {"text": text}}


async def test_a_passed_check_is_not_run_again_and_refusals_still_come_from_a_full_check(make_app, stub):
    app = await make_app()
    verdicts = app.services.engine.verdicts
    body = _seed(f"TOKEN-same {SEED_TEXT}")
    first = await app.client.post(START, json=body)
    second = await app.client.post(START, json=body)
    assert first.status_code == second.status_code == 202
    assert verdicts.hits == 1 and len(verdicts) == 1
    for response in (first, second):
        run = await wait_for_end(app.client, response.json()["pipeline_run_id"])
        assert run["pipeline_state"] == "COMPLETED", run
        assert main_content(run)["text"].endswith("[TOKEN-same]")
    # the same method, other inputs: checked in full, and refused as before
    missing = await app.client.post(START, json={**body, "inputs": {}})
    assert missing.status_code == 422 and missing.json()["code"] == "input.missing"
    unknown = await app.client.post(START, json={**body, "pipe_code": "ghost"})
    assert unknown.status_code == 422 and unknown.json()["code"] == "request.pipe_not_found"
    # a changed method with the same inputs is another key: a broken one is refused, never answered from the verdict
    broken = await app.client.post(
        START, json={**body, "mthds_contents": [SEED_BUNDLE.replace('inputs = { text = "Text" }', "inputs = [")]}
    )
    assert broken.status_code == 422 and broken.json()["code"] == "method.invalid"
    renamed = SEED_BUNDLE.replace("{ text = ", "{ passage = ").replace("@text", "@passage")
    wrong_input = await app.client.post(START, json={**body, "mthds_contents": [renamed]})
    assert wrong_input.status_code == 422 and wrong_input.json()["code"] == "input.unexpected"
    assert verdicts.hits == 1 and len(verdicts) == 1
    assert stub.stats()["total_calls"] == 2


async def test_concurrent_starts_of_one_and_of_many_methods_each_get_their_own_output(make_app, stub):
    app = await make_app(sse_max_streams_per_caller=200)
    await app.client.post(START, json=_seed(f"TOKEN-warm {SEED_TEXT}"))
    one = [_seed(f"TOKEN-one{index} {SEED_TEXT}") for index in range(40)] + [_seed(f"TOKEN-one0 {SEED_TEXT}")] * 20
    many = [{"mthds_contents": [unique_bundle(index)], "inputs": {"text": f"n{index}"}} for index in range(40)]
    responses = await asyncio.gather(*(app.client.post(START, json=body) for body in one + many))
    assert all(response.status_code == 202 for response in responses), [r.text for r in responses if r.status_code != 202]
    runs = await asyncio.gather(*(wait_for_end(app.client, r.json()["pipeline_run_id"]) for r in responses))
    assert all(run["pipeline_state"] == "COMPLETED" for run in runs), runs
    for index, run in enumerate(runs[:40]):
        assert main_content(run)["text"].endswith(f"[TOKEN-one{index}]")
    for run in runs[40:60]:
        assert main_content(run)["text"].endswith("[TOKEN-one0]")
    for index, run in enumerate(runs[60:]):
        assert main_content(run)["value"] == f"stub-value-TOKEN-r{index}"
    # checks that ran at once all ran in full; the one after them is answered from the verdict, and runs as its own
    verdicts = app.services.engine.verdicts
    hits = verdicts.hits
    again = await app.client.post(START, json=_seed(f"TOKEN-one7 {SEED_TEXT}"))
    assert again.status_code == 202 and verdicts.hits == hits + 1
    run = await wait_for_end(app.client, again.json()["pipeline_run_id"])
    assert main_content(run)["text"].endswith("[TOKEN-one7]")


def test_only_checks_that_read_nothing_beyond_their_key_are_remembered():
    verdicts = CheckVerdicts(LibraryCache(max_entries=8, max_mib=8))

    def key(inputs, **overrides):
        arguments = {"pipe_code": "summarize", "mthds_contents": [SEED_BUNDLE], "inputs": inputs, "plain": True, "dry_run": False}
        return verdicts.key(**{**arguments, "scope": "a", "tree": None, **overrides})

    plain = key({"text": "hello"})
    assert plain is not None and plain == key({"text": "hello"})
    assert len({plain, key({"text": "hello!"}), key({"text": "hello"}, dry_run=True), key({"text": "hello"}, scope="b")}) == 4
    assert key({"text": "hello"}, mthds_contents=[SEED_BUNDLE + "\n"]) not in (None, plain)
    # inputs that could be fetched or read, output overrides, a bare pipe code: never remembered
    assert key({"doc": {"concept": "native.Document", "content": {"url": "https://example.com/a.pdf"}}}) is None
    assert key({"image": {"url": "data:image/png;base64,AAAA"}}) is None
    assert key({"doc": "pipelex-storage://scope/x"}) is None
    assert key({"doc": {"concept": "Document", "content": {"url": "scope/inputs/a.pdf"}}}) is None
    assert key({"text": "hello"}, plain=False) is None
    assert key({"text": "hello"}, mthds_contents=None) is None
    verdicts.remember(plain)
    assert verdicts.passed(plain) and not verdicts.passed(key({"text": "other"})) and not verdicts.passed(None)


async def test_runs_not_started_yet_wait_for_pending_acks_and_never_longer_than_the_bound():
    acks = AckPriority(max_wait_seconds=60)
    await acks.yield_to_acks()  # no ack pending: at once
    with acks.acknowledging():
        waiting = asyncio.create_task(acks.yield_to_acks())
        await asyncio.sleep(0)
        with acks.acknowledging():
            await asyncio.sleep(0)
        assert not waiting.done()  # an ack is still pending
    await waiting  # the last ack ended: the run goes
    bounded = AckPriority(max_wait_seconds=0.01)
    with bounded.acknowledging():
        await bounded.yield_to_acks()  # returns while the ack is still pending: bounded
        assert bounded.pending == 1
    off = AckPriority(max_wait_seconds=0)
    with off.acknowledging():
        await off.yield_to_acks()


async def test_waiting_runs_go_only_once_no_ack_has_been_pending_for_the_settle_window():
    acks = AckPriority(max_wait_seconds=60, settle_seconds=60)
    with acks.acknowledging():
        waiting = asyncio.create_task(acks.yield_to_acks())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()  # no ack pending, but the window has not passed: a back-to-back start may come
    acks.settle_seconds = 0.001
    with acks.acknowledging():  # the next start arrived within the window: it goes first, and re-arms the window
        await asyncio.sleep(0)
        assert not waiting.done()
    await waiting  # then quiet for the (now short) window: the run goes
    stale = AckPriority(max_wait_seconds=60, settle_seconds=0.001)
    with stale.acknowledging():
        pass
    with stale.acknowledging():  # began before the first window's timer fired: that timer must not release runs
        await asyncio.sleep(0.01)
        assert not stale._settled.is_set()
    await stale.yield_to_acks()


async def test_a_start_counts_as_an_ack_from_its_arrival_before_its_body_is_read(make_app, stub):
    app = await make_app()
    acks = app.services.runs.acks
    seen: list[int] = []
    body = json.dumps(_seed(f"TOKEN-window {SEED_TEXT}")).encode()

    async def chunks():
        yield body[:10]
        seen.append(acks.pending)  # the app asked for the rest of the body: the request is in the app
        yield body[10:]

    response = await app.client.post(START, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text
    assert seen == [1] and acks.pending == 0
    run = await wait_for_end(app.client, response.json()["pipeline_run_id"])
    assert main_content(run)["text"].endswith("[TOKEN-window]")
    # other routes are not acks
    seen.clear()
    validate = await app.client.post("/api/v1/validate", content=chunks(), headers={"content-type": "application/json"})
    assert validate.status_code in (200, 422) and seen == [0]
    # the middleware's paths are the app's acknowledging routes
    posts = {path for path, operations in app.app.openapi()["paths"].items() if "post" in operations}
    assert START_PATHS <= posts


async def test_a_start_answers_the_crate_fingerprint_its_check_loaded_as_the_run_reports_it(make_app, stub):
    app = await make_app()
    body = {"mthds_contents": [SEED_BUNDLE], "pipe_code": "summarize", "inputs": {"text": f"TOKEN-crate {SEED_TEXT}"}}
    executed = await app.client.post("/v1/execute", json=body)
    assert executed.status_code == 200, executed.text
    crate = executed.json().get("crate_fingerprint")
    assert isinstance(crate, str) and crate
    hits = app.services.engine.verdicts.hits
    first, second = [await app.client.post("/v1/start", json=body) for _ in range(2)]
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert app.services.engine.verdicts.hits == hits + 1  # the second ack came from the remembered check
    assert first.json()["crate_fingerprint"] == second.json()["crate_fingerprint"] == crate
    for response in (first, second):
        run_id = response.json()["pipeline_run_id"]
        assert (await wait_for_end(app.client, run_id))["pipeline_state"] == "COMPLETED"
        recorded = await app.client.get(f"/v1/runs/{run_id}")  # the run record (the SDK's RunDetail)
        assert recorded.status_code == 200 and recorded.json()["crate_fingerprint"] == crate, recorded.text
    other = await app.client.post(
        "/v1/start", json={**body, "mthds_contents": [unique_bundle(7)], "pipe_code": None, "inputs": {"text": "x"}}
    )
    assert other.status_code == 202 and other.json()["crate_fingerprint"] not in (None, crate)
