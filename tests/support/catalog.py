"""A live server in AUTH_MODE=jwt for the catalog tests, and the official SDK client of one of its callers."""

from __future__ import annotations

import time

import jwt
from pipelex_sdk.client import PipelexAPIClient

from tests.support.bundles import SEED_BUNDLE
from tests.support.server import ServerProcess

JWT_SECRET = "catalog-test-secret-that-is-long-enough-for-hs256"
SEED_FILES = {"hello.mthds": SEED_BUNDLE}
INVALID_BUNDLE = 'domain = "hello"\nmain_pipe = "nowhere"\n\n[pipe.summarize]\ntype = "PipeLLM"\n'


def token(user_id: str) -> str:
    return jwt.encode({"user_id": user_id, "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256")


def jwt_env(stub_url: str, **extra: str) -> dict[str, str]:
    return {"OPENAI_BASE_URL": stub_url, "AUTH_MODE": "jwt", "JWT_SECRET_KEY": JWT_SECRET, **extra}


def sdk(server: ServerProcess, user: str) -> PipelexAPIClient:
    return PipelexAPIClient(api_key=token(user), base_url=server.url, request_timeout_seconds=60)


def headers(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}
