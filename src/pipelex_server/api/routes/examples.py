"""`/v1/methods/{id}/examples`: a method's saved examples in the official SDK's wire shapes: create, list (oldest first),
read, update, delete, record a latest run (`recorded` or `stale`) and the build assistant's save (`kept` or
`created`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from pydantic import ConfigDict, Field

from pipelex_server.api.body_guard import GuardedBody
from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.routes.catalog import MethodId, PlatformRoute, catalog_of
from pipelex_server.api.schemas import PROBLEM_RESPONSES

router = APIRouter(
    prefix="/v1/methods/{method_id}/examples", tags=["methods catalog"], route_class=PlatformRoute, responses=PROBLEM_RESPONSES
)

ExampleId = Annotated[str, Path(min_length=1, max_length=256, description="The example's id (ex_…)")]


class ExampleCreateBody(GuardedBody):
    model_config = ConfigDict(extra="forbid")

    name: Any = None
    inputs: Any = None
    run_id: Any = Field(default=None, description="A run of this method that used exactly these inputs.")


class LatestRunBody(GuardedBody):
    model_config = ConfigDict(extra="forbid")

    run_id: Any = None
    input_revision: Any = None


class OpenBody(GuardedBody):
    """An update or an assistant save: the members given are what changes."""

    model_config = ConfigDict(extra="forbid")

    name: Any = None
    inputs: Any = None
    example_id: Any = None
    input_revision: Any = None

    def given(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


@router.post("", status_code=201, summary="Save an example on a method")
async def create_example(body: ExampleCreateBody, services: ServicesDep, caller: CallerDep, method_id: MethodId) -> Any:
    examples = catalog_of(services).examples
    return await examples.create(caller, method_id, name=body.name, inputs=body.inputs, run_id=body.run_id)


@router.get("", summary="One page of a method's examples, oldest first")
async def list_examples(
    services: ServicesDep,
    caller: CallerDep,
    method_id: MethodId,
    limit: int | None = None,
    cursor: Annotated[str | None, Query(min_length=1, max_length=512)] = None,
) -> Any:
    return await catalog_of(services).examples.list(caller, method_id, limit=limit, cursor=cursor)


@router.post("/assistant-save", summary="The build assistant's save: kept into its example, or created")
async def assistant_save(body: OpenBody, services: ServicesDep, caller: CallerDep, method_id: MethodId) -> Any:
    return await catalog_of(services).examples.assistant_save(caller, method_id, body=body.given())


@router.get("/{example_id}", summary="One example of a method")
async def get_example(services: ServicesDep, caller: CallerDep, method_id: MethodId, example_id: ExampleId) -> Any:
    return await catalog_of(services).examples.get(caller, method_id, example_id)


@router.patch("/{example_id}", summary="Rename an example, give it new inputs, or both")
async def update_example(body: OpenBody, services: ServicesDep, caller: CallerDep, method_id: MethodId, example_id: ExampleId) -> Any:
    given = {name: value for name, value in body.given().items() if name in ("name", "inputs")}
    return await catalog_of(services).examples.update(caller, method_id, example_id, body=given)


@router.delete("/{example_id}", status_code=204, summary="Delete an example")
async def delete_example(services: ServicesDep, caller: CallerDep, method_id: MethodId, example_id: ExampleId) -> Response:
    await catalog_of(services).examples.delete(caller, method_id, example_id)
    return Response(status_code=204)


@router.put("/{example_id}/latest-run", summary="Record a run as the example's latest, at the revision whose inputs it used")
async def record_latest_run(
    body: LatestRunBody, services: ServicesDep, caller: CallerDep, method_id: MethodId, example_id: ExampleId
) -> Any:
    examples = catalog_of(services).examples
    return await examples.record_latest_run(caller, method_id, example_id, run_id=body.run_id, revision=body.input_revision)
