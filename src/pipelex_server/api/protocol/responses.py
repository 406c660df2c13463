"""The response models the /v1 run routes declare (OpenAPI): the shapes pipelex-sdk reads; our fields ride along."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelex_server.runs.progress import RunStatus


class ProtocolRunRead(BaseModel):
    """GET /v1/runs/{id}/status (the shape pipelex-sdk's RunRead reads); our run document's fields ride along."""

    model_config = ConfigDict(extra="allow")

    pipeline_run_id: str
    pipe_code: str | None
    status: RunStatus
    created_at: str
    finished_at: str | None
    error: dict[str, Any] | None = Field(description="The run's own problem document when it did not succeed.")
    degraded: bool


class ProtocolInvocation(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str
    pipe_code: str
    pipe_ref: str
    pipe_type: str
    status: Literal["running", "succeeded", "failed", "canceled"]
    started_at: str | None
    ended_at: str | None


class ProtocolRunProgress(BaseModel):
    """GET /v1/runs/{id}/progress (the shape pipelex-sdk's RunProgress reads)."""

    model_config = ConfigDict(extra="allow")

    pipeline_run_id: str
    mode: Literal["live", "dry"]
    status: Literal["pending", "running", "succeeded", "failed", "canceled"]
    version: int = Field(ge=0, description="The run's last event number: never decreases.")
    assembled_at: str
    summary: str
    invocations: list[ProtocolInvocation]


class ProtocolRunResults(BaseModel):
    """GET /v1/runs/{id}/results 200 (the shape pipelex-sdk's RunResults reads)."""

    model_config = ConfigDict(extra="allow")

    pipeline_run_id: str
    main_stuff: Any = None
    working_memory: dict[str, Any] | None = None
    tokens_usages: list[dict[str, Any]] | None = None
