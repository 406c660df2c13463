"""`/v1/pipelex-api-keys`: a caller's API keys (AUTH_MODE=keys), in the official SDK's wire shapes.

List `{keys: [...]}` (never a secret), create and rotate answer the secret once (`api_key`), revoke answers 204.
The operator's bootstrap API_KEY manages any caller's keys, naming the caller in `X-Pipelex-Caller` (api/deps.py).
Another caller's key id answers the same 404 `pipelex.org.not_found` as an unknown id.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelex_server.api.deps import AccountCallerDep, ServicesDep
from pipelex_server.api.protocol.platform_problems import org_not_found, platform_problem, unsupported
from pipelex_server.api.schemas import PROBLEM_RESPONSES
from pipelex_server.composition import Services
from pipelex_server.key_service import ApiKeyService
from pipelex_server.settings import AuthMode

router = APIRouter(prefix="/v1/pipelex-api-keys", tags=["api keys"])

MAX_LABEL_CHARS = 256


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")

    label: str = Field(min_length=1, max_length=MAX_LABEL_CHARS, description="A name for the key, shown in lists.")
    expires_at: datetime | None = Field(
        default=None, description="When the key stops working (ISO 8601 with a UTC offset); default: API_KEY_TTL_DAYS, else never."
    )

    @field_validator("label")
    @classmethod
    def _printable(cls, value: str) -> str:
        value = value.strip()
        if not value or not value.isprintable():
            raise ValueError("the label must be printable text, not blank")
        return value

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires_at needs a UTC offset (e.g. 2030-01-01T00:00:00Z)")
        return value


class ApiKeyView(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    label: str
    prefix: str = Field(description="The secret's first characters, to tell keys apart.")
    created_at: str
    last_used_at: str | None = Field(description="The last authenticated use (recorded at most once a minute).")
    expires_at: str | None


class ApiKeyList(BaseModel):
    keys: list[ApiKeyView]


class ApiKeyCreated(BaseModel):
    model_config = ConfigDict(extra="allow")

    api_key: str = Field(description="The secret: shown this once, never again.")
    id: str
    label: str
    prefix: str
    created_at: str


def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def _view(row: dict[str, Any]) -> dict[str, Any]:
    view = {
        "id": row["id"],
        "label": row["label"],
        "prefix": row["prefix"],
        "created_at": _when(row["created_at"]),
        "last_used_at": _when(row.get("last_used_at")),
        "expires_at": _when(row.get("expires_at")),
    }
    if row.get("rotated_at") is not None:
        view["rotated_at"] = _when(row["rotated_at"])
    return view


def _created(row: dict[str, Any], secret: str) -> dict[str, Any]:
    view = {key: value for key, value in _view(row).items() if key != "last_used_at" and value is not None}
    return {"api_key": secret, **view}


def _keys(services: Services) -> ApiKeyService:
    if services.settings.auth_mode is not AuthMode.KEYS or services.api_keys is None:
        raise unsupported("API keys in this deployment's auth mode (set AUTH_MODE=keys to manage keys)")
    return services.api_keys


@router.get("", response_model=ApiKeyList, responses=PROBLEM_RESPONSES, summary="The caller's API keys (never their secrets)")
async def list_keys(services: ServicesDep, caller: AccountCallerDep) -> Any:
    return {"keys": [_view(row) for row in await _keys(services).list(caller.id)]}


@router.post("", status_code=201, response_model=ApiKeyCreated, responses=PROBLEM_RESPONSES, summary="Mint a key (its secret shown once)")
async def create_key(services: ServicesDep, caller: AccountCallerDep, body: ApiKeyCreate) -> Any:
    keys = _keys(services)
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise platform_problem(
            "request.invalid", detail="expires_at must be in the future.", params={"field": "expires_at"}, location={"field": "expires_at"}
        )
    created = await keys.create(caller.id, body.label, expires_at=body.expires_at)
    if created is None:
        cap = keys.max_per_caller
        raise platform_problem(
            "pipelex.billing.plan_limit",
            detail=f"This caller already holds {cap} live API keys (API_KEYS_MAX_PER_CALLER); revoke one first.",
            params={"limit": "api_keys", "value": cap},
        )
    return _created(*created)


@router.post(
    "/{key_id}/rotate", response_model=ApiKeyCreated, responses=PROBLEM_RESPONSES, summary="A new secret; the old one stops at once"
)
async def rotate_key(services: ServicesDep, caller: AccountCallerDep, key_id: str) -> Any:
    rotated = await _keys(services).rotate(caller.id, key_id)
    if rotated is None:
        raise org_not_found("api_key", detail=f"The caller has no API key {key_id[:64]!r}.")
    return _created(*rotated)


@router.delete("/{key_id}", status_code=204, responses=PROBLEM_RESPONSES, summary="Revoke a key (it stops at once)")
async def revoke_key(services: ServicesDep, caller: AccountCallerDep, key_id: str) -> Response:
    if not await _keys(services).revoke(caller.id, key_id):
        raise org_not_found("api_key", detail=f"The caller has no API key {key_id[:64]!r}.")
    return Response(status_code=204)
