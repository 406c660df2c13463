"""Typed dependencies: route signatures say what they need, and auth shows up in OpenAPI."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipelex_server.api.auth import authenticate
from pipelex_server.composition import Services
from pipelex_server.runs.model import Caller


def get_services(request: Request) -> Services:
    return request.app.state.services


_bearer = HTTPBearer(auto_error=False, description="API key or JWT, depending on AUTH_MODE")


def get_caller(
    request: Request,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    return authenticate(request, request.app.state.services.settings)


def get_request_id(request: Request) -> str:
    return request.scope["state"]["request_id"]


ServicesDep = Annotated[Services, Depends(get_services)]
CallerDep = Annotated[Caller, Depends(get_caller)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
