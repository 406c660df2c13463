"""GET /api/v1/usage: the caller's runs, tokens and cost over a time window, grouped by day, pipe code or model."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from pipelex_server.api.deps import CallerDep, ServicesDep
from pipelex_server.api.schemas import PROBLEM_RESPONSES

router = APIRouter(prefix="/api/v1", tags=["usage"])


class UsageFigures(BaseModel):
    runs: int = Field(description="Runs created in the window (by model: runs that called it)")
    tokens: dict[str, int] = Field(description="Tokens by category, as the run documents' usage.tokens")
    cost_usd: float = Field(description="Sum of the priced runs' (or calls') cost in US dollars")
    unpriced_runs: int = Field(description="Runs with inference calls the runtime could not price (not in cost_usd)")


class UsageGroup(UsageFigures):
    key: str | None = Field(description="The day (YYYY-MM-DD, UTC), the pipe code (null: runs that named none) or the model")


class UsageReport(BaseModel):
    from_: str = Field(alias="from")
    to: str
    group_by: Literal["day", "pipe_code", "model"]
    total: UsageFigures
    groups: list[UsageGroup]


@router.get(
    "/usage",
    response_model=UsageReport,
    response_model_by_alias=True,
    responses=PROBLEM_RESPONSES,
    summary="The caller's runs, tokens and cost in [from, to), by day, pipe code or model",
)
async def usage(
    services: ServicesDep,
    caller: CallerDep,
    start: Annotated[datetime | None, Query(alias="from", description="ISO 8601; default: 30 days before 'to'")] = None,
    end: Annotated[datetime | None, Query(alias="to", description="ISO 8601, exclusive; default: now")] = None,
    group_by: Literal["day", "pipe_code", "model"] = "day",
) -> Any:
    assert services.usage is not None
    return await services.usage.usage(caller=caller, start=start, end=end, group_by=group_by)
