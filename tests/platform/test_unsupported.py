"""The hosted-business routes the SDK calls answer a complete 501 `runtime.unsupported` naming the capability, after
authenticating the caller."""

from __future__ import annotations

from typing import Any

import pytest

from pipelex_server.api.routes.unsupported import UNSUPPORTED_ROUTES
from tests.platform.test_keys import BOOTSTRAP, assert_complete_problem, bearer, mint


@pytest.mark.parametrize(("method", "path", "capability"), UNSUPPORTED_ROUTES)
async def test_each_hosted_route_is_a_final_501(client: Any, method: str, path: str, capability: str) -> None:
    concrete = "/v1" + path.replace("{org_id}", "org_1").replace("{method_id}", "mt_1")
    response = await client.request(method, concrete, json={"plan": "pro", "name": "x"})
    problem = assert_complete_problem(response, 501, "runtime.unsupported")
    assert problem["params"] == {"capability": capability}
    assert capability in problem["detail"] and problem["retry"] == "no"


async def test_the_caller_is_authenticated_first(make_app: Any) -> None:
    app = await make_app(auth_mode="keys", api_key=BOOTSTRAP)
    assert_complete_problem(await app.client.get("/v1/billing/plans"), 401, "auth.missing_credential")
    key = await mint(app.client, "zoe")
    assert_complete_problem(await app.client.get("/v1/billing/plans", headers=bearer(key["api_key"])), 501, "runtime.unsupported")


async def test_another_method_on_the_served_memberships_path_is_405_not_501(client: Any) -> None:
    response = await client.patch("/v1/organizations/memberships", json={"name": "x"})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["code"] == "request.method_not_allowed"
