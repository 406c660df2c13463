"""`GET /v1/me` (the caller's profile), and the account reads the SDK makes beside it: `GET
/v1/organizations/memberships` and `GET /v1/branding`. A self-hosted caller is its own organization (its scope).

The profile is built from what authenticated the request: a JWT's claims (`email`, `name`; all claims are echoed
under `claims`), the API key used (`api_key`: id, label, prefix; never the secret), or the caller id alone.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from pipelex_server.api.deps import AccountCallerDep, IdentityDep, ServicesDep
from pipelex_server.api.schemas import PROBLEM_RESPONSES

router = APIRouter(prefix="/v1", tags=["account"])


class UserProfile(BaseModel):
    model_config = ConfigDict(extra="allow")

    email: str
    user_id: str
    full_name: str


def _claim(claims: dict[str, Any], *names: str) -> str | None:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


@router.get("/me", response_model=UserProfile, responses=PROBLEM_RESPONSES, summary="The caller's profile")
async def get_me(services: ServicesDep, identity: IdentityDep, caller: AccountCallerDep) -> Any:
    claims = identity.claims or {}
    profile: dict[str, Any] = {
        "email": _claim(claims, "email") or "",
        "user_id": caller.id,
        "full_name": _claim(claims, "name", "full_name", "preferred_username") or caller.id,
        "organization_id": caller.scope,
        "auth_mode": services.settings.auth_mode.value,
    }
    if identity.claims is not None:
        profile["claims"] = identity.claims
    if identity.key is not None:
        profile["api_key"] = {"id": identity.key.key_id, "label": identity.key.label, "prefix": identity.key.prefix}
    if identity.operator:
        profile["operator"] = True
    return profile


@router.get("/organizations/memberships", responses=PROBLEM_RESPONSES, summary="The caller's one organization: itself")
async def list_memberships(caller: AccountCallerDep) -> Any:
    membership = {"org_id": caller.scope, "workos_organization_id": None, "name": caller.id, "is_personal": True, "role_in_org": "admin"}
    return {"memberships": [membership], "active_org_feature_flags": []}


@router.get("/branding", responses=PROBLEM_RESPONSES, summary="No branding is kept: every colour and logo is null")
async def get_branding(caller: AccountCallerDep) -> Any:
    colors = {"action": None, "accent": None, "header": None}
    return {
        "org_id": caller.scope,
        "org_name": caller.id,
        "colors": colors,
        "dark_colors": dict(colors),
        "square_logo": None,
        "wide_logo": None,
    }
