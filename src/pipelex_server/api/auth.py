"""Who is calling: none (one shared tenant, or a trusted proxy's X-User-Id), a static API key, HS256 JWTs, or the
callers' own API keys kept in the database (AUTH_MODE=keys, docs/api-keys.md).

``identify`` is the one entry (async: keys are looked up in the database); it keeps what it found on the request
(``request.state.identity``: the caller, the JWT's claims, the key used, or the operator's bootstrap key).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any

import jwt
from fastapi import Request

from pipelex_server.errors import ApiProblem
from pipelex_server.key_service import ApiKeyService, KeyIdentity
from pipelex_server.runs.model import Caller
from pipelex_server.settings import AuthMode, Settings

CALLER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
SHARED_CALLER = Caller(id="shared")


@dataclass(frozen=True)
class Identity:
    """What authenticated a request. ``caller`` is None only for the operator's bootstrap key (AUTH_MODE=keys with
    API_KEY set), which manages any caller's keys and names that caller per request (api/deps.py)."""

    caller: Caller | None
    claims: dict[str, Any] | None = None
    key: KeyIdentity | None = None
    operator: bool = False


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


async def identify(request: Request, settings: Settings, keys: ApiKeyService | None) -> Identity:
    """Authenticate the request once (the result is kept on ``request.state.identity``)."""
    known = getattr(request.state, "identity", None)
    if isinstance(known, Identity):
        return known
    if settings.auth_mode is AuthMode.KEYS:
        identity = await _identify_by_key(request, settings, keys)
    elif settings.auth_mode is AuthMode.JWT:
        claims = _jwt_claims(_bearer_token(request), settings)
        identity = Identity(caller=_jwt_caller(claims), claims=claims)
    else:
        identity = Identity(caller=authenticate(request, settings))
    request.state.identity = identity
    return identity


async def _identify_by_key(request: Request, settings: Settings, keys: ApiKeyService | None) -> Identity:
    token = _bearer_token(request)
    bootstrap = settings.api_key.get_secret_value() if settings.api_key else ""
    if bootstrap and hmac.compare_digest(token.encode(), bootstrap.encode()):
        return Identity(caller=None, operator=True)
    if keys is None:  # services not built (never in a running server)
        raise _unauthorized("auth.invalid_credential", "The API key was refused.", error="invalid_token")
    check = await keys.check(token)
    if check.expired:
        raise _unauthorized("auth.credential_expired", "The API key has expired; rotate it or create another.", error="invalid_token")
    if check.identity is None:
        raise _unauthorized("auth.invalid_credential", "The API key was refused.", error="invalid_token")
    return Identity(caller=Caller(id=check.identity.caller_id), key=check.identity)


def authenticate(request: Request, settings: Settings) -> Caller:
    """The caller in the modes that need no database (none, api_key, jwt)."""
    mode = settings.auth_mode
    if mode is AuthMode.KEYS:
        raise TypeError("AUTH_MODE=keys looks keys up in the database: call identify()")
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

    return _jwt_caller(_jwt_claims(token, settings))


def _jwt_claims(token: str, settings: Settings) -> dict[str, Any]:
    secret = settings.jwt_secret_key.get_secret_value() if settings.jwt_secret_key else ""
    required = ["exp"] if settings.jwt_require_exp else []
    try:
        return jwt.decode(token, secret, algorithms=["HS256"], options={"require": required})
    except jwt.ExpiredSignatureError as exc:
        raise _unauthorized("auth.credential_expired", "The token has expired.", error="invalid_token") from exc
    except jwt.InvalidTokenError as exc:
        raise _unauthorized("auth.invalid_credential", "The token was refused.", error="invalid_token") from exc


def _jwt_caller(claims: dict[str, Any]) -> Caller:
    user_id = claims.get("user_id")
    if not isinstance(user_id, str) or not CALLER_ID_RE.match(user_id):
        raise _unauthorized(
            "auth.invalid_credential", "The token needs a user_id claim matching [A-Za-z0-9_-]{1,128}.", error="invalid_token"
        )
    return Caller(id=user_id)
