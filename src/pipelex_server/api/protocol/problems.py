"""Protocol problems: the domain, retry and next step of each code, and completing problems for protocol readers.

The official clients parse every error as a protocol `Problem`, which requires `domain`, `retry` and `next_step`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mthds.protocol.problem.client_problems import render_template
from mthds.protocol.problem.registry import CORE_CODE_SPECS, CoreCode, ProblemDomain, RetryVerdict, StepKind

from pipelex_server.errors import MTHDS_TYPE_BASE, ApiProblem

# Our own codes (not in the MTHDS core registry): domain, retry, next step.
_OWN_CODES: dict[str, tuple[ProblemDomain, RetryVerdict, StepKind, str]] = {
    "inference.not_configured": (
        ProblemDomain.OPERATOR,
        RetryVerdict.NO,
        StepKind.FIX_CONFIGURATION,
        "Set a provider key or OPENAI_BASE_URL on the server and restart it, or run with dry_run.",
    ),
    "server.not_ready": (ProblemDomain.RUNTIME, RetryVerdict.YES, StepKind.WAIT, "Wait a few seconds, then send the request again."),
    "input.reserved_key": (
        ProblemDomain.INPUT,
        RetryVerdict.NO,
        StepKind.CHANGE_INPUT,
        "Rename the input key, then send the request again.",
    ),
    "callback.secret_missing": (
        ProblemDomain.OPERATOR,
        RetryVerdict.NO,
        StepKind.FIX_CONFIGURATION,
        "Set COMPLETION_CALLBACK_SECRET on the server, or send no callback_urls.",
    ),
    "callback.url_refused": (ProblemDomain.INPUT, RetryVerdict.NO, StepKind.CHANGE_INPUT, "Send a public http(s) callback URL."),
    "request.too_deeply_nested": (
        ProblemDomain.INPUT,
        RetryVerdict.NO,
        StepKind.CHANGE_INPUT,
        "Flatten the value or bundle at the problem's location (at most params.limit levels), then send the request again.",
    ),
    "request.invalid_text": (
        ProblemDomain.INPUT,
        RetryVerdict.NO,
        StepKind.CHANGE_INPUT,
        "Remove the lone surrogate or NUL character at the problem's location, then send the request again.",
    ),
}
_GENERIC_STEP = "Read the problem's detail, then act on it."


def protocol_members(code: str, status: int | None, params: dict[str, Any] | None) -> dict[str, Any]:
    """`domain`, `retry` and `next_step` for a code: the MTHDS registry's, ours, or a fallback by status."""
    spec = CORE_CODE_SPECS.get(code)  # type: ignore[call-overload]  # StrEnum keys: a plain str finds them
    if spec is not None:
        # as the runtime words a caller's problem: the actor's step, but for the operator's domain
        step = spec.other_step if spec.domain is ProblemDomain.OPERATOR else spec.actor_step
        try:
            detail = render_template(step.detail, params=params or {})
        except ValueError:  # a parameter the template names is not on our problem
            detail = _GENERIC_STEP
        return {"domain": spec.domain.value, "retry": spec.retry.value, "next_step": {"kind": step.kind.value, "detail": detail}}
    if code in _OWN_CODES:
        domain, retry, kind, detail = _OWN_CODES[code]
    elif status in (429, 503):
        domain, retry, kind, detail = ProblemDomain.RUNTIME, RetryVerdict.YES, StepKind.WAIT, "Wait a moment, then send the request again."
    elif status is not None and status < 500:
        domain, retry, kind, detail = ProblemDomain.INPUT, RetryVerdict.NO, StepKind.CHANGE_INPUT, _GENERIC_STEP
    else:
        domain, retry, kind, detail = ProblemDomain.RUNTIME, RetryVerdict.NO, StepKind.REPORT, "Report the problem with its request_id."
    return {"domain": domain.value, "retry": retry.value, "next_step": {"kind": kind.value, "detail": detail}}


PROTOCOL_PREFIX = "/v1"
_SHOWN_PATH_CHARS = 200


def is_protocol_path(path: str) -> bool:
    return path == PROTOCOL_PREFIX or path.startswith(PROTOCOL_PREFIX + "/")


def routing_problem(status: int, *, method: str, path: str, headers: Mapping[str, str] | None) -> ApiProblem:
    """A /v1 request no route serves, as the official server answers it: 404 `request.not_found`, or 405
    `request.method_not_allowed` with the `Allow` header the router gave (the SDK reads `request.not_found` as "this
    route is absent", any other code as the route's own answer)."""
    shown = path if len(path) <= _SHOWN_PATH_CHARS else path[:_SHOWN_PATH_CHARS] + "..."
    allow = {name: value for name, value in (headers or {}).items() if name.lower() == "allow"}
    if status == 405:
        spec = CORE_CODE_SPECS[CoreCode.REQUEST_METHOD_NOT_ALLOWED]
        accepted = next(iter(allow.values()), "")
        detail = f"The route {shown} does not accept {method}" + (f"; it accepts {accepted}." if accepted else ".")
    else:
        spec = CORE_CODE_SPECS[CoreCode.REQUEST_NOT_FOUND]
        detail = f"This runner serves no route {method} {shown}."
    problem = ApiProblem(
        status=spec.status or status,
        code=spec.code,
        detail=detail,
        title=spec.title,
        type_uri=MTHDS_TYPE_BASE + spec.code,
        headers=allow if status == 405 else None,
    )
    complete_problem(problem)
    return problem


def complete_problem(problem: ApiProblem) -> None:
    """Give a problem the members a protocol reader requires; the members it already has are kept."""
    for key, value in protocol_members(problem.code, problem.status, problem.members.get("params")).items():
        problem.members.setdefault(key, value)


def protocol_problem(document: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored problem document, completed for a protocol reader (declared members are never null there)."""
    if not document:
        return None
    completed = {key: value for key, value in document.items() if value is not None or key == "request_id"}
    completed.setdefault("type", MTHDS_TYPE_BASE + str(completed.get("code")))
    completed.setdefault("title", "The run did not succeed")
    completed.setdefault("detail", "The run did not succeed.")
    completed.setdefault("code", "runtime.unexpected")
    for key, value in protocol_members(str(completed["code"]), completed.get("status"), completed.get("params")).items():
        completed.setdefault(key, value)
    return completed


def protocol_item(item: dict[str, Any]) -> dict[str, Any] | None:
    """A validation finding as a protocol ProblemItem (code and detail strings, no null members)."""
    code, detail = item.get("code"), item.get("detail")
    if not isinstance(code, str) or not isinstance(detail, str):
        return None
    return {key: value for key, value in item.items() if value is not None}


# ---------------------------------------------------------------- request refusals, as the official server words them


def _shown_path(location: Any) -> str:
    path = location.get("path") if isinstance(location, dict) else None
    segments = [str(segment) for segment in (path or [])[1:9]]
    return ".".join(segments) + (".…" if path and len(path) > 9 else "") if segments else "the body"


def protocol_refusal(problem: ApiProblem) -> ApiProblem:
    """A request refusal under /v1 in the official server's code and params (the /api/v1 routes keep ours):

    - a reserved object key (`input.reserved_key`, params.key) is the runtime registry's `pipelex.security.reserved_key`
      with params.keys; the detail says where the key is;
    - a body that is not JSON (`request.malformed` from the decoder, which lists the decoder's error) is
      `request.malformed` with params.reason `not_json`; the detail says at which character the decoder stopped.

    Any other problem is returned as it is."""
    if problem.code == "input.reserved_key":
        from pipelex_server.engine.problems import registry_problem

        key = str((problem.members.get("params") or {}).get("key") or "")
        where = _shown_path(problem.members.get("location"))
        detail = (
            f"The request carries the reserved object key {key!r} (at {where}): no object under inputs may carry a "
            "'__class__' or '__module__' key, or a key starting with '__kajson'."
        )
        return registry_problem("pipelex.security.reserved_key", detail=detail, params={"keys": [key]})
    decoder_errors = problem.members.get("errors")
    if problem.code == "request.malformed" and decoder_errors and "params" not in problem.members:
        path = ((decoder_errors[0] or {}).get("location") or {}).get("path") or []
        at = f" (the decoder stopped at character {path[1]})" if len(path) > 1 and str(path[1]).isdigit() else ""
        return ApiProblem(
            status=422, code="request.malformed", detail=f"The request body is not valid JSON{at}.", params={"reason": "not_json"}
        )
    return problem
