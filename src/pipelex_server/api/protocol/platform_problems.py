"""Complete problem documents for the platform routes the official SDK calls (keys, me, files, catalog, runs).

The SDK (`pipelex_sdk`) reads an error body only when it is a complete protocol problem: `type`, `title`,
`status`, `detail` and `code`, plus `domain`, `retry` and `next_step`, with optional members left out rather than
`null` (a `null` makes it discard the body). Its codes are the runtime registry's (`pipelex.catalog.*`,
`pipelex.org.*`, `pipelex.storage.*`, `run.not_found`, `runtime.unsupported`, ...). Every platform route builds its
refusals here:

- `platform_problem(code, ...)`: any registry code, worded as the registry words it (status, title, type URI,
  domain, retry, next step rendered from `params`); a code the registry does not know gets our own title (or the
  status phrase) and the domain/retry/next step `problems.protocol_members` gives it.
- `unsupported(capability)`: the 501 `runtime.unsupported` a hosted-business route answers (the SDK treats it as
  final).
- `invalid_cursor(field)`: the 400 a tampered or foreign list cursor answers.
- `org_not_found(resource)`: the 404 `pipelex.org.not_found` of an organization's resource (an API key, ...).
"""

from __future__ import annotations

from typing import Any

from pipelex_server.api.protocol.problems import complete_problem, protocol_members
from pipelex_server.errors import ApiProblem


def _has_placeholder(text: object) -> bool:
    return isinstance(text, str) and "{" in text and "}" in text


def platform_problem(
    code: str,
    *,
    detail: str | None = None,
    params: dict[str, Any] | None = None,
    status: int | None = None,
    **members: Any,
) -> ApiProblem:
    """A complete problem under ``code`` (see the module docstring). ``status`` overrides the registry's (a
    cursor refusal is a 400 under `request.invalid`); ``members`` (`location`, `errors`, ...) are added as given,
    ``None`` values left out."""
    from pipelex_server.engine.problems import registry_problem  # the registry lives with the runtime

    params = params or None
    try:
        problem = registry_problem(code, detail=detail, params=params, **members)
    except ValueError:  # not a registry code: one of ours (SERVER_CODES) or a new one
        problem = ApiProblem(status=status or 400, code=code, detail=detail or code, params=params, **members)
        complete_problem(problem)
        return problem
    if status is not None:
        problem.status = status
    step = problem.members.get("next_step") or {}
    if _has_placeholder(step.get("detail")):  # the registry's step names a parameter this problem does not carry
        problem.members["next_step"] = protocol_members("", problem.status, None)["next_step"] | {"kind": step.get("kind")}
    if _has_placeholder(problem.detail):
        problem.detail = problem.title
    return problem


def unsupported(capability: str) -> ApiProblem:
    """501 `runtime.unsupported` naming the capability this self-hosted server does not offer."""
    detail = f"This self-hosted server does not offer {capability}: it is a feature of the hosted Pipelex platform."
    return platform_problem("runtime.unsupported", detail=detail, params={"capability": capability})


def invalid_cursor(field: str = "cursor") -> ApiProblem:
    """400 for a list cursor this server did not issue to this caller (tampered, truncated, or another list's)."""
    return platform_problem(
        "request.invalid",
        status=400,
        detail=f"The '{field}' is not a cursor this server issued for this list; start again without it.",
        params={"field": field},
        location={"field": field},
    )


def org_not_found(resource: str, *, detail: str | None = None) -> ApiProblem:
    """404 `pipelex.org.not_found` for a resource of the caller's organization (`api_key`, ...). Another caller's
    id answers this same problem as an unknown id."""
    return platform_problem("pipelex.org.not_found", detail=detail, params={"resource": resource})
