"""Typed dependencies: route signatures say what they need, and auth shows up in OpenAPI."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipelex_server.api.auth import CALLER_ID_RE, Identity, identify
from pipelex_server.api.protocol.platform_problems import platform_problem
from pipelex_server.composition import Services
from pipelex_server.runs.model import Caller


# async: FastAPI runs a plain-def dependency in its thread pool, a thread hand-off per request for an attribute read
async def get_services(request: Request) -> Services:
    return request.app.state.services


_bearer = HTTPBearer(auto_error=False, description="API key or JWT, depending on AUTH_MODE")


async def get_identity(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    services = request.app.state.services
    return await identify(request, services.settings, services.api_keys)


async def get_caller(identity: Annotated[Identity, Depends(get_identity)]) -> Caller:
    if identity.caller is None:  # the operator's bootstrap key (AUTH_MODE=keys) manages keys, it runs nothing
        raise platform_problem(
            "auth.forbidden",
            detail="The bootstrap API_KEY only manages callers' keys (/v1/pipelex-api-keys); send a caller's API key here.",
            params={"requirement": "a caller's API key"},
        )
    return identity.caller


OPERATOR_CALLER_HEADER = "x-pipelex-caller"


async def get_account_caller(request: Request, identity: Annotated[Identity, Depends(get_identity)]) -> Caller:
    """The caller whose account (keys, profile) a request reads or changes: the authenticated caller, or, for the
    operator's bootstrap key, the caller its ``X-Pipelex-Caller`` header names."""
    if identity.caller is not None:
        return identity.caller
    named = request.headers.getlist(OPERATOR_CALLER_HEADER)
    if len(named) != 1 or not CALLER_ID_RE.match(named[0]):
        raise platform_problem(
            "request.invalid",
            status=400,
            detail="With the bootstrap API_KEY, name the caller in exactly one X-Pipelex-Caller header ([A-Za-z0-9_-]{1,128}).",
            params={"field": "X-Pipelex-Caller"},
            location={"field": "X-Pipelex-Caller"},
        )
    return Caller(id=named[0])


async def get_request_id(request: Request) -> str:  # async: see get_services
    return request.scope["state"]["request_id"]


ServicesDep = Annotated[Services, Depends(get_services)]
CallerDep = Annotated[Caller, Depends(get_caller)]
IdentityDep = Annotated[Identity, Depends(get_identity)]
AccountCallerDep = Annotated[Caller, Depends(get_account_caller)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
