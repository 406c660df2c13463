"""A method's saved examples through the official `PipelexAPIClient` against a live server (AUTH_MODE=jwt): create,
list oldest first, read, update (the revision rises and the latest run clears), latest-run writes (`recorded`,
`stale`), the assistant's save (`kept`, `created`), delete, and another caller's 404."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pipelex_sdk.errors import ApiResponseError
from pipelex_sdk.product_models import MethodWriteInput

from tests.support.bundles import SEED_TEXT
from tests.support.catalog import SEED_FILES, headers, jwt_env, sdk
from tests.support.server import ServerProcess

pytestmark = pytest.mark.slow

INPUTS = {"text": SEED_TEXT}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, stub: Any) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("examples"), env=jwt_env(stub.base_url)) as running:
        yield running


async def test_examples_keep_their_inputs_revision_and_latest_run(server: ServerProcess) -> None:
    async with sdk(server, "alice") as client:
        method = await client.create_method(MethodWriteInput(name="With examples", files=SEED_FILES))
        other = await client.create_method(MethodWriteInput(name="Other", files=SEED_FILES))
        mid = method.method_id
        run = await client.execute(method_id=f"{mid}@draft", inputs=INPUTS)
        other_run = await client.execute(method_id=f"{other.method_id}@draft", inputs=INPUTS)

        first = await client.create_method_example(mid, name="first", inputs=INPUTS, run_id=run.pipeline_run_id)
        assert first.example_id.startswith("ex_") and first.input_revision == 1 and first.latest_run_id == run.pipeline_run_id
        assert first.kept_by_assistant is False
        second = await client.create_method_example(mid, name="second", inputs={"text": "3", "n": 3})
        assert second.latest_run_id is None
        with pytest.raises(ApiResponseError) as foreign_run:
            await client.create_method_example(mid, name="x", inputs=INPUTS, run_id=other_run.pipeline_run_id)
        assert foreign_run.value.status == 404 and foreign_run.value.problem.code == "run.not_found"
        with pytest.raises(ApiResponseError) as blank:
            await client.create_method_example(mid, name="  ", inputs=INPUTS)
        assert blank.value.status == 422

        page = await client.list_method_examples(mid, limit=1)
        assert [item.example_id for item in page.items] == [first.example_id] and page.next_cursor
        assert [item.example_id async for item in client.iterate_method_examples(mid, limit=1)] == [first.example_id, second.example_id]
        assert (await client.get_method_example(mid, second.example_id)).inputs == {"text": "3", "n": 3}

        renamed = await client.update_method_example(mid, first.example_id, name="first, renamed")
        assert (renamed.input_revision, renamed.latest_run_id) == (1, run.pipeline_run_id)
        same = await client.update_method_example(mid, second.example_id, inputs={"n": 3, "text": "3"})  # keys reordered
        assert same.input_revision == 1
        changed = await client.update_method_example(mid, first.example_id, inputs={"text": "new text"})
        assert (changed.input_revision, changed.latest_run_id) == (2, None)

        stale = await client.record_method_example_latest_run(mid, first.example_id, run_id=run.pipeline_run_id, input_revision=1)
        assert stale.outcome == "stale" and stale.example.latest_run_id is None
        rerun = await client.execute(method_id=f"{mid}@draft", inputs={"text": "new text"})
        recorded = await client.record_method_example_latest_run(mid, first.example_id, run_id=rerun.pipeline_run_id, input_revision=2)
        assert recorded.outcome == "recorded" and recorded.example.latest_run_id == rerun.pipeline_run_id

        created = await client.save_assistant_method_example(mid, name="assistant", inputs={"text": "a"})
        assert created.outcome == "created" and created.example.kept_by_assistant
        kept = await client.save_assistant_method_example(
            mid, name="ignored", inputs={"text": "b"}, example_id=created.example.example_id, input_revision=created.example.input_revision
        )
        assert kept.outcome == "kept" and kept.example.example_id == created.example.example_id
        assert kept.example.name == "assistant" and kept.example.inputs == {"text": "b"}
        retried = await client.save_assistant_method_example(  # the retry of a save that landed writes nothing again
            mid, name="ignored", inputs={"text": "b"}, example_id=created.example.example_id, input_revision=created.example.input_revision
        )
        assert retried.outcome == "kept" and retried.example.input_revision == kept.example.input_revision
        person = await client.update_method_example(mid, created.example.example_id, inputs={"text": "a person's"})
        assert person.kept_by_assistant is False
        not_overwritten = await client.save_assistant_method_example(
            mid,
            name="assistant again",
            inputs={"text": "c"},
            example_id=created.example.example_id,
            input_revision=kept.example.input_revision,
        )
        assert not_overwritten.outcome == "created" and not_overwritten.example.example_id != created.example.example_id
        assert (await client.get_method_example(mid, created.example.example_id)).inputs == {"text": "a person's"}

        await client.delete_method_example(mid, second.example_id)
        with pytest.raises(ApiResponseError) as gone:
            await client.get_method_example(mid, second.example_id)
        assert gone.value.status == 404 and gone.value.problem.code == "pipelex.catalog.not_found"

    async with sdk(server, "bob") as bob:
        with pytest.raises(ApiResponseError) as foreign:
            await bob.list_method_examples(mid)
        assert foreign.value.status == 404 and foreign.value.problem.code == "pipelex.catalog.not_found"

    with httpx.Client(base_url=server.url, headers=headers("alice")) as http:
        tampered = http.get(f"/v1/methods/{mid}/examples", params={"cursor": page.next_cursor[:-2] + "xx"})
        assert tampered.status_code == 400
        assert http.get(f"/v1/methods/{mid}/examples", params={"limit": 0}).status_code == 422
