"""Who is calling: none (one shared tenant, or a trusted proxy's X-User-Id), a static API key, or HS256 JWTs."""

from __future__ import annotations

import hmac
import re

import jwt
from fastapi import Request

from pipelex_server.errors import ApiProblem
from pipelex_server.runs.model import Caller
from pipelex_server.settings import AuthMode, Settings

CALLER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
SHARED_CALLER = Caller(id="shared")


def _unauthorized(code: str, detail: str, *, error: str | None = None) -> ApiProblem:
    challenge = 'Bearer realm="pipelex-server"'
    if error:
        challenge += f', error="{error}"'
    return ApiProblem(status=401, code=code, detail=detail, headers={"WWW-Authenticate": challenge})


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("auth.missing_credential", "Send 'Authorization: Bearer <token>'.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("auth.invalid_credential", "The Authorization header must be 'Bearer <token>'.", error="invalid_request")
    return token.strip()


def authenticate(request: Request, settings: Settings) -> Caller:
    mode = settings.auth_mode
    if mode is AuthMode.NONE:
        if not settings.trust_forwarded_identity_headers:
            return SHARED_CALLER
        sent = request.headers.getlist("x-user-id")
        if len(sent) > 1:  # two identities: a proxy that appended instead of replacing; never pick one
            raise ApiProblem(status=400, code="auth.ambiguous_identity", detail="Send exactly one X-User-Id header.")
        user_id = sent[0] if sent else None
        if not user_id:
            raise _unauthorized("auth.missing_credential", "The X-User-Id header is required by this deployment.")
        if not CALLER_ID_RE.match(user_id):
            raise _unauthorized("auth.invalid_credential", "X-User-Id must match [A-Za-z0-9_-]{1,128}.")
        return Caller(id=user_id)

    token = _bearer_token(request)
    if mode is AuthMode.API_KEY:
        expected = settings.api_key.get_secret_value() if settings.api_key else ""
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise _unauthorized("auth.invalid_credential", "The API key was refused.", error="invalid_token")
        return SHARED_CALLER

    secret = settings.jwt_secret_key.get_secret_value() if settings.jwt_secret_key else ""
    required = ["exp"] if settings.jwt_require_exp else []
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": required})
    except jwt.ExpiredSignatureError as exc:
        raise _unauthorized("auth.credential_expired", "The token has expired.", error="invalid_token") from exc
    except jwt.InvalidTokenError as exc:
        raise _unauthorized("auth.invalid_credential", "The token was refused.", error="invalid_token") from exc
    user_id = claims.get("user_id")
    if not isinstance(user_id, str) or not CALLER_ID_RE.match(user_id):
        raise _unauthorized(
            "auth.invalid_credential", "The token needs a user_id claim matching [A-Za-z0-9_-]{1,128}.", error="invalid_token"
        )
    return Caller(id=user_id)
