"""`GET /v1/me` in each auth mode (JWT claims where present, the key used in keys mode), and the account reads the SDK
makes beside it (memberships, branding), read with the SDK's own models."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from pipelex_sdk.product_models import MembershipsResponse, OrganizationBranding, UserProfile

from tests.platform.test_keys import BOOTSTRAP, assert_complete_problem, bearer, mint, operator_for

SECRET = "me-test-secret-that-is-long-enough-for-hs256"


async def test_me_without_auth_is_the_shared_caller(client: Any) -> None:
    profile = UserProfile.model_validate((await client.get("/v1/me")).json())
    assert (profile.user_id, profile.full_name, profile.email) == ("shared", "shared", "")
    assert profile.model_extra and profile.model_extra["auth_mode"] == "none"


async def test_me_reads_the_jwt_claims(make_app: Any) -> None:
    app = await make_app(auth_mode="jwt", jwt_secret_key=SECRET)
    claims = {"user_id": "ann", "email": "ann@example.com", "name": "Ann Example", "exp": int(time.time()) + 600}
    answer = await app.client.get("/v1/me", headers=bearer(jwt.encode(claims, SECRET, algorithm="HS256")))
    profile = UserProfile.model_validate(answer.json())
    assert (profile.user_id, profile.email, profile.full_name) == ("ann", "ann@example.com", "Ann Example")
    assert answer.json()["claims"] == claims
    bare = jwt.encode({"user_id": "bo", "exp": int(time.time()) + 600}, SECRET, algorithm="HS256")
    assert UserProfile.model_validate((await app.client.get("/v1/me", headers=bearer(bare))).json()).full_name == "bo"
    assert_complete_problem(await app.client.get("/v1/me"), 401, "auth.missing_credential")


async def test_me_in_keys_mode_names_the_key_and_the_operator_names_a_caller(make_app: Any) -> None:
    app = await make_app(auth_mode="keys", api_key=BOOTSTRAP)
    key = await mint(app.client, "cy", "desk")
    me = (await app.client.get("/v1/me", headers=bearer(key["api_key"]))).json()
    assert me["user_id"] == "cy" and me["organization_id"] == "cy" and me["api_key"]["label"] == "desk"
    assert key["api_key"] not in str(me)
    operator = (await app.client.get("/v1/me", headers=operator_for("cy"))).json()
    assert operator["user_id"] == "cy" and operator["operator"] is True


async def test_memberships_and_branding_describe_the_callers_own_organization(make_app: Any) -> None:
    app = await make_app(auth_mode="keys", api_key=BOOTSTRAP)
    key = await mint(app.client, "dee")
    memberships = MembershipsResponse.model_validate(
        (await app.client.get("/v1/organizations/memberships", headers=bearer(key["api_key"]))).json()
    )
    assert [(m.org_id, m.is_personal) for m in memberships.memberships] == [("dee", True)]
    branding = OrganizationBranding.model_validate((await app.client.get("/v1/branding", headers=bearer(key["api_key"]))).json())
    assert branding.org_id == "dee" and branding.square_logo is None and branding.colors.action is None


@pytest.mark.slow
async def test_the_sdk_in_jwt_mode_reads_each_callers_profile(tmp_path: Any, stub: Any) -> None:
    from pipelex_sdk.client import PipelexAPIClient
    from pipelex_sdk.errors import ApiResponseError

    from tests.support.server import ServerProcess

    env = {"OPENAI_BASE_URL": stub.base_url, "AUTH_MODE": "jwt", "JWT_SECRET_KEY": SECRET}
    with ServerProcess(tmp_path, env=env) as server:
        for user_id, name in (("ann", "Ann Example"), ("ben", None)):
            claims = {"user_id": user_id, "exp": int(time.time()) + 600, **({"name": name} if name else {})}
            key = jwt.encode(claims, SECRET, algorithm="HS256")
            async with PipelexAPIClient(api_key=key, base_url=server.url, request_timeout_seconds=60) as client:
                profile = await client.get_me()
                assert (profile.user_id, profile.full_name) == (user_id, name or user_id)
                assert (await client.list_memberships()).memberships[0].org_id == user_id
                with pytest.raises(ApiResponseError) as no_keys:
                    await client.list_pipelex_api_keys()
                assert (no_keys.value.status, no_keys.value.problem.code) == (501, "runtime.unsupported")
                with pytest.raises(ApiResponseError) as no_billing:
                    await client.get_subscription()
                assert no_billing.value.problem.code == "runtime.unsupported"
