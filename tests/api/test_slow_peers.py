"""Fan-out and slow peers: a request with 20,000 URLs, callback receivers that trickle or flood, a DNS zone that never
answers, one request's download budget, and the one refusal message callers see for a refused host."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from pipelex_server import netguard
from pipelex_server.engine.storage import InputResolution
from pipelex_server.errors import ApiProblem
from pipelex_server.fetch import Fetcher
from pipelex_server.storage import LocalObjectStore
from tests.support.bundles import seed_request
from tests.support.fileserver import FileServer
from tests.support.receiver import Receiver, SlowReceiver
from tests.support.runs import wait_for_end
from tests.support.server import ServerProcess

EXECUTE = "/api/v1/pipeline/execute"
START = "/api/v1/pipeline/start"
SECRET = "callback-secret-for-slow-peer-tests"

DOCUMENTS_BUNDLE = '''domain = "piles"
main_pipe = "read_pile"

[pipe.read_pile]
type = "PipeLLM"
description = "Read a pile of documents"
inputs = { docs = "Document[]" }
output = "Text"
prompt = """
Summarize these documents:
@docs
"""
'''

DOCUMENT_BUNDLE = '''domain = "docs"
main_pipe = "read"

[pipe.read]
type = "PipeLLM"
description = "Read a document"
inputs = { doc = "Document" }
output = "Text"
prompt = """
Summarize this document:
@doc
"""
'''

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def _document(url: str) -> dict[str, Any]:
    return {"mthds_contents": [DOCUMENT_BUNDLE], "inputs": {"doc": {"concept": "Document", "content": {"url": url}}}, "dry_run": True}


# --- 20,000 URL inputs -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_twenty_thousand_urls_are_refused_at_once_before_anything_is_fetched(tmp_path):
    with FileServer() as files, ServerProcess(tmp_path) as server:
        files.add("/doc", PDF, "application/pdf")
        pile = {"docs": {"concept": "Document", "content": [{"url": f"{files.url('/doc')}?{index}"} for index in range(20_000)]}}
        requests = [
            (route, json.dumps({"mthds_contents": [DOCUMENTS_BUNDLE], "inputs": pile, "dry_run": dry_run}).encode())
            for route in (EXECUTE, START, "/v1/execute")
            for dry_run in (True, False)
        ]
        health: list[tuple[int, float]] = []
        done = threading.Event()

        def poll_health() -> None:
            with httpx.Client(base_url=server.url, timeout=5) as http:
                while not done.is_set():
                    started = time.monotonic()
                    status = http.get("/health").status_code
                    health.append((status, time.monotonic() - started))

        poller = threading.Thread(target=poll_health)
        poller.start()
        answers = []
        try:
            with server.client(headers={"Content-Type": "application/json"}) as http:
                for route, body in requests:
                    started = time.monotonic()
                    response = http.post(route, content=body)
                    answers.append((route, response, time.monotonic() - started))
        finally:
            done.set()
            poller.join()
        for route, response, elapsed in answers:
            assert response.status_code == 422, (route, response.text[:300])
            problem = response.json()
            assert problem["code"] == "input.too_many_urls"
            assert problem["params"]["input"] == "docs" and "'docs'" in problem["detail"]
            assert elapsed < 1.0, (route, elapsed)
        assert files.requests() == [] and files.connections_accepted == 0
        assert len(health) >= 3 and all(status == 200 for status, _ in health)
        assert max(elapsed for _, elapsed in health) < 0.5
        print(f"\nrefusal times: {[round(elapsed, 3) for _, _, elapsed in answers]}; /health answered {len(health)} times meanwhile")


# --- callbacks to slow receivers ---------------------------------------------------------------------------------------


def _at(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def _start(app, callback_url: str) -> str:
    response = await app.client.post(START, json=seed_request(callback_urls=[callback_url], dry_run=True))
    assert response.status_code == 202, response.text
    return response.json()["pipeline_run_id"]


async def _callback_record(app, run_id: str) -> dict[str, Any]:
    return (await app.client.get(f"/api/v1/runs/{run_id}")).json()["callbacks"][0]


@pytest.mark.slow
async def test_receivers_that_trickle_or_flood_never_delay_another_runs_callback(make_app):
    app = await make_app(
        completion_callback_secret=SECRET,
        callback_allow_private_hosts=True,
        callback_timeout_seconds=2.0,
        callback_backoff_seconds=1.0,
        callback_max_attempts=3,
    )
    with SlowReceiver("trickle", interval=0.5) as trickle, SlowReceiver("flood") as flood, Receiver() as normal:
        trickled_run = await _start(app, trickle.url)
        flooded_run = await _start(app, flood.url)
        (trickling,) = await asyncio.to_thread(trickle.wait_for, 1)
        await asyncio.to_thread(flood.wait_for, 1)

        normal_run = await _start(app, normal.url)
        run = await wait_for_end(app.client, normal_run)
        (delivery,) = await asyncio.to_thread(normal.wait_for, 1)
        delay = delivery.received_at - _at(run["finished_at"])
        assert delivery.verify(SECRET)
        assert delay < 2.0, delay
        assert delivery.received_at < trickling.received_at + 2.0  # the trickling attempt was still going

        first, second = await asyncio.to_thread(trickle.wait_for, 2)  # retried after its deadline and the back-off
        flooded = await asyncio.to_thread(flood.wait_for, 2)
        gap = second.received_at - first.received_at
        assert 2.0 + 1.0 - 0.3 <= gap < 5.0, gap  # deadline (2 s) + back-off (1 s), not the 500 s the answer would take
        # the first attempts, as recorded before the retries (read while the receivers still serve the retries)
        trickled = await _callback_record(app, trickled_run)
        flood_record = await _callback_record(app, flooded_run)

    assert trickled["delivered_at"] is None and trickled["attempts"] >= 1 and trickled["next_attempt_at"] is not None
    assert trickled["last_status"] is None  # four bytes in two seconds: not even the status line
    assert trickled["last_error"] == "no complete answer within 2 seconds (CALLBACK_TIMEOUT_SECONDS)"
    assert flood_record["delivered_at"] is None and flood_record["attempts"] >= 1
    assert flood_record["last_status"] == 200 and flood_record["last_error"] == "the answer was longer than 64 KiB"
    assert flooded[0].ended.is_set() and flooded[0].closed_by_client
    assert flooded[0].bytes_sent < 64 * 1024 * 1024  # not the gigabyte
    assert (await _callback_record(app, normal_run))["delivered_at"] is not None
    print(f"\nnormal receiver's delay after its run's end: {delay:.3f} s; trickling receiver retried after {gap:.2f} s")


# --- DNS ---------------------------------------------------------------------------------------------------------------

ZONE = {"private.zone.test": ["10.1.2.3"], "meta.zone.test": ["169.254.169.254"], "nat64.zone.test": ["64:ff9b::c0a8:1"]}


class Zone:
    """The resolver seam: ``ZONE`` names answer, ``*.never.test`` never answers (until the test ends), others do not exist."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.changed = threading.Condition()
        self.running = 0

    def lookup(self, host: str, port: int) -> list[str]:
        with self.changed:
            self.running += 1
            self.changed.notify_all()
        try:
            if host.endswith(".never.test"):
                self.release.wait()
            if host in ZONE:
                return ZONE[host]
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        finally:
            with self.changed:
                self.running -= 1

    def wait_running(self, count: int, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.running >= count, timeout)


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Zone]:
    fake = Zone()
    monkeypatch.setattr(netguard, "lookup", fake.lookup)
    yield fake
    fake.release.set()


async def _timed(request) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await request
    return response, time.monotonic() - started


@pytest.mark.slow
async def test_a_zone_that_never_answers_is_refused_at_the_dns_deadline_and_stalls_nothing_else(make_app, zone):
    dns_timeout = 3.0  # DNS_TIMEOUT_SECONDS (not the default 5: the setting reaches both the fetcher and the callback check)
    app = await make_app(completion_callback_secret=SECRET, dns_timeout_seconds=dns_timeout)
    # twelve lookups that never answer: more than the loop's default executor has threads on a small machine
    fetches = [asyncio.create_task(_timed(app.client.post(EXECUTE, json=_document(f"https://host{index}.never.test/doc.pdf"))))
               for index in range(12)]  # fmt: skip
    callback = asyncio.create_task(
        _timed(app.client.post(START, json=seed_request(callback_urls=["https://hooks.never.test/cb"], dry_run=True)))
    )
    assert await asyncio.to_thread(zone.wait_running, 8)  # DNS_MAX_CONCURRENCY threads are stuck

    upload, upload_seconds = await _timed(app.client.post("/api/v1/uploads", files={"file": ("report.pdf", PDF, "application/pdf")}))
    dry, dry_seconds = await _timed(app.client.post(EXECUTE, json=seed_request(dry_run=True)))
    assert upload.status_code == 201 and upload_seconds < 1.0, (upload.text, upload_seconds)
    assert dry.status_code == 200 and dry_seconds < 2.0, (dry.text, dry_seconds)
    assert not any(task.done() for task in fetches)  # answered while the lookups were still hanging

    refusals = await asyncio.gather(*fetches)
    for index, (response, elapsed) in enumerate(refusals):
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["code"] == "security.input_url_refused"
        assert (
            problem["detail"]
            == f"Input 'doc': The URL was refused: the host 'host{index}.never.test' does not resolve to a public address."
        )
        assert dns_timeout - 0.5 <= elapsed < dns_timeout + 2.5, elapsed
    response, elapsed = await callback
    assert response.status_code == 422 and response.json()["code"] == "callback.url_refused"
    assert response.json()["detail"] == "callback_urls[0] is refused: the host 'hooks.never.test' does not resolve to a public address."
    assert dns_timeout - 0.5 <= elapsed < dns_timeout + 2.5, elapsed
    print(f"\nrefused after {[round(elapsed, 2) for _, elapsed in refusals]} s; upload {upload_seconds:.3f} s, dry run {dry_seconds:.3f} s")


# --- one refusal message -----------------------------------------------------------------------------------------------

HOSTS = ["missing.zone.test", "private.zone.test", "meta.zone.test", "nat64.zone.test"]


async def test_callers_get_one_message_whether_a_host_does_not_resolve_or_resolves_to_a_private_address(make_app, zone):
    app = await make_app(completion_callback_secret=SECRET)
    fetch_details, callback_details = set(), set()
    for host in HOSTS:
        fetched = await app.client.post(EXECUTE, json=_document(f"https://{host}/doc.pdf?token=t"))
        assert fetched.status_code == 422 and fetched.json()["code"] == "security.input_url_refused"
        assert fetched.json()["params"]["reason"] == "url_refused"
        fetch_details.add(fetched.json()["detail"].replace(host, "HOST"))
        called = await app.client.post(START, json=seed_request(callback_urls=[f"https://{host}/cb"], dry_run=True))
        assert called.status_code == 422 and called.json()["code"] == "callback.url_refused"
        callback_details.add(called.json()["detail"].replace(host, "HOST"))
    assert fetch_details == {"Input 'doc': The URL was refused: the host 'HOST' does not resolve to a public address."}
    assert callback_details == {"callback_urls[0] is refused: the host 'HOST' does not resolve to a public address."}


# --- the download budget of one request --------------------------------------------------------------------------------


async def test_a_request_whose_downloads_pass_the_request_budget_is_refused_naming_the_input(make_app):
    app = await make_app(fetch_allow_private_hosts=True, fetch_max_request_mib=0.5)
    with FileServer() as files:
        for name in ("a", "b", "c"):
            files.add(f"/{name}.pdf", PDF + b"%" * 200_000, "application/pdf")
        urls = [{"url": files.url(f"/{name}.pdf")} for name in ("a", "b", "c")]
        body = {"mthds_contents": [DOCUMENTS_BUNDLE], "inputs": {"docs": {"concept": "Document", "content": urls}}, "dry_run": True}
        response = await app.client.post(START, json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "input.too_large" and problem["params"]["reason"] == "too_large"
    assert problem["params"]["input"].startswith("docs")
    assert problem["detail"].startswith(f"Input '{problem['params']['input']}': ") and "FETCH_MAX_REQUEST_MIB" in problem["detail"]


async def test_an_input_resolution_names_the_input_whose_download_passes_the_request_budget(tmp_path):
    fetcher = Fetcher(allow_private=True, max_bytes=1 << 20, timeout_seconds=5.0, max_request_bytes=250_000)
    store = LocalObjectStore(tmp_path / "storage")
    try:
        with FileServer() as files:
            files.add("/first.pdf", PDF + b"%" * 150_000, "application/pdf")
            files.add("/second.pdf", PDF + b"%" * 150_001, "application/pdf")
            resolution = InputResolution(store=store, fetcher=fetcher, storage_scope="shared/runs/r1")
            first = await resolution.fetch(files.url("/first.pdf"), image=False, input_path="docs[0]")
            again = await resolution.fetch(files.url("/first.pdf"), image=False, input_path="copy")  # fetched once, counted once
            with pytest.raises(ApiProblem) as caught:
                await resolution.fetch(files.url("/second.pdf"), image=False, input_path="docs[1]")
            assert files.hits("/first.pdf") == 1
    finally:
        await fetcher.aclose()
    assert first.uri == again.uri and first.uri.startswith("pipelex-storage://shared/runs/r1/inputs/")
    problem = caught.value.to_document(request_id=None)
    assert (problem["status"], problem["code"]) == (422, "input.too_large")
    assert problem["params"]["input"] == "docs[1]" and problem["params"]["reason"] == "too_large"
    assert problem["detail"].startswith("Input 'docs[1]': ") and "FETCH_MAX_REQUEST_MIB" in problem["detail"]
