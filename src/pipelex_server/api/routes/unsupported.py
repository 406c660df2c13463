"""The hosted platform's business routes the SDK calls, which a self-hosted server does not offer: billing and plans,
organization writes, branding writes, onboarding, method copies, manual run status changes, file archives and copies of
a stored file into a draft. Each authenticates its caller, then answers a complete 501 `runtime.unsupported` problem
naming the capability (the SDK reads it as final, not as "route absent"). The request body is not read. The routes
are left out of the OpenAPI document: this server does not offer them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipelex_server.api.deps import IdentityDep
from pipelex_server.api.protocol.platform_problems import unsupported
from pipelex_server.api.schemas import PROBLEM_RESPONSES

router = APIRouter(prefix="/v1", tags=["hosted platform only"])

# (method, path, capability named in the problem)
UNSUPPORTED_ROUTES: tuple[tuple[str, str, str], ...] = (
    ("GET", "/billing/subscription", "billing (subscriptions)"),
    ("GET", "/billing/plans", "billing (plans)"),
    ("GET", "/billing/invoices", "billing (invoices)"),
    ("POST", "/billing/checkout", "billing (checkout)"),
    ("POST", "/billing/change-plan", "billing (plan changes)"),
    ("GET", "/billing/portal", "billing (the billing portal)"),
    ("POST", "/organizations", "organization management (creating organizations)"),
    ("PATCH", "/organizations/{org_id}", "organization management (renaming organizations)"),
    ("PATCH", "/organizations/{org_id}/branding", "organization branding (writes)"),
    ("POST", "/onboarding/submit", "onboarding"),
    ("POST", "/methods/{method_id}/copy", "method copies between organizations"),
    ("GET", "/methods/{method_id}/copies", "method copies between organizations"),
    # the platform's other calls this server does not offer: a run's state is the run lifecycle's alone, and file
    # archives and copies of a stored file into a draft are hosted conveniences (write the draft with the file instead)
    ("PUT", "/runs/{run_id}", "manual run status changes"),
    ("POST", "/files/archives", "file archives"),
    ("GET", "/files/archives/{archive_id}", "file archives"),
    ("POST", "/methods/{method_id}/draft/files/from-file", "copying a stored file into a method's draft"),
)


# literal paths served elsewhere that a `{org_id}` pattern above would also match: another method on them is a 405
SERVED_LITERALS = {"/organizations/memberships": "GET"}


def _refuse(capability: str) -> Callable[..., Awaitable[Any]]:
    async def endpoint(request: Request, _identity: IdentityDep) -> Any:
        allowed = SERVED_LITERALS.get(request.url.path.removeprefix("/v1"))
        if allowed is not None:
            raise StarletteHTTPException(status_code=405, headers={"Allow": allowed})
        raise unsupported(capability)

    return endpoint


for _method, _path, _capability in UNSUPPORTED_ROUTES:
    router.add_api_route(
        _path,
        _refuse(_capability),
        methods=[_method],
        status_code=501,
        include_in_schema=False,  # not offered: the route exists only so the SDK reads a final answer
        responses=PROBLEM_RESPONSES,
        summary=f"501 runtime.unsupported: {_capability} is a hosted-platform feature",
        name=f"unsupported_{_method.lower()}_{_path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
    )
