"""Runtime errors -> our problem documents, by the runtime registry's codes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mthds.protocol.problem.client_problems import render_template
from mthds.protocol.problem.registry import ProblemDomain
from pipelex.base_exceptions import PipelexError
from pipelex.errors.error_codes import error_code_spec, parse_error_code
from pipelex.errors.problem import ProblemView

from pipelex_server.errors import ApiProblem, internal_error

logger = logging.getLogger(__name__)

PROVIDER_SDK_MODULES = frozenset({"openai", "anthropic", "mistralai", "google", "groq", "instructor"})
_KEPT_MEMBERS = ("location", "params", "next_step", "errors", "retry", "domain", "retry_after")


def registry_entry(code: str) -> tuple[int | None, str | None, str | None]:
    """(status, title, type URI) the runtime registry gives a code, or Nones for a code it does not know."""
    parsed = parse_error_code(code)
    if parsed is None:
        return None, None, None
    spec = error_code_spec(parsed)
    return spec.status, spec.title, spec.type_uri


def registry_problem(code: str, *, detail: str | None = None, params: dict[str, Any] | None = None, **members: Any) -> ApiProblem:
    """A problem the server raises under a code of the runtime's registry, complete as the runtime words it: the
    registry's status, title and type, and its domain, retry and next step (the caller's step; for an operator's
    problem, the step of whoever relays it). ``detail`` defaults to the registry's own."""
    parsed = parse_error_code(code)
    if parsed is None:
        raise ValueError(f"{code!r} is no code of the runtime's registry")
    spec = error_code_spec(parsed)
    operator = spec.domain is ProblemDomain.OPERATOR
    step_kind, step_detail = (spec.other_step, spec.other_step_detail) if operator else (spec.actor_step, spec.actor_step_detail)
    try:
        step_text = render_template(step_detail, params=params or {})
        default_detail = render_template(spec.detail, params=params or {})
    except ValueError:  # a parameter the registry's template names is not given
        step_text, default_detail = step_detail, spec.title
    return ApiProblem(
        status=spec.status or 500,
        code=code,
        detail=detail or default_detail,
        title=spec.title,
        type_uri=spec.type_uri,
        domain=spec.domain.value,
        retry=spec.retry.value,
        next_step={"kind": step_kind.value, "detail": step_text},
        params=params,
        **members,
    )


def _provider_refusal(exc: BaseException) -> ApiProblem | None:
    """A provider SDK's 4xx answer the runtime did not classify (it calls it unexpected): a provider failure, 502.

    It is neither the caller's input error nor the server's own bug, and a 500 would say the latter."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        status = getattr(current, "status_code", None)
        module = type(current).__module__.split(".")[0]
        if isinstance(status, int) and 400 <= status < 500 and module in PROVIDER_SDK_MODULES:
            _status, title, type_uri = registry_entry("provider.failed")
            return ApiProblem(
                status=502,
                code="provider.failed",
                detail=f"The model provider refused the request (HTTP {status}).",
                title=title,
                type_uri=type_uri,
                params={"status": status},
            )
        current = current.__cause__ or current.__context__
    return None


def _in_chain(exc: BaseException, matches: Callable[[BaseException], bool]) -> BaseException | None:
    """The first exception of ``exc``'s cause chain that ``matches`` (the runtime wraps what a pipe raised)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 32:
        if matches(current):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _is_long_integer(exc: BaseException) -> bool:
    return type(exc) is ValueError and "integer string conversion" in str(exc)


def _request_problem(exc: BaseException) -> ApiProblem | None:
    """The runtime failures that a request's own structure causes, though the runtime calls them unexpected."""
    if _in_chain(exc, lambda current: isinstance(current, RecursionError)) is not None:
        # The runtime walks bundles and inputs recursively (schemas, copies, renderers): a structure it cannot
        # follow (say, a long chain of concepts, each a field of the one before) is the request's, not a server fault.
        logger.warning("the runtime ran out of recursion on a request")
        return ApiProblem(
            status=422,
            code="request.too_deeply_nested",
            detail=(
                "The bundle or the inputs nest too deeply for the runtime to process (for instance, too long a chain of "
                "concepts that each hold the next one): flatten them."
            ),
        )
    if _in_chain(exc, _is_long_integer) is not None:  # the TOML parser reads an integer literal with int()
        status, title, type_uri = registry_entry("method.invalid")
        detail = "The bundle holds an integer of more than 4300 digits, which cannot be read."
        return ApiProblem(
            status=status or 422,
            code="method.invalid",
            detail=detail,
            title=title,
            type_uri=type_uri,
            errors=[{"code": "method.syntax", "detail": detail}],
        )
    return None


def problem_from_exception(exc: BaseException, *, request_id: str | None) -> ApiProblem:
    """Translate anything the runtime raised. A non-runtime exception becomes a bare 500 (logged, never leaked)."""
    if isinstance(exc, ApiProblem):
        return exc
    # A problem the server raised from inside the runtime (the input resolution) may come back wrapped.
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            break
        if isinstance(current, ApiProblem):
            return current
        current = current.__cause__ or current.__context__
    request_problem = _request_problem(exc)
    if request_problem is not None:
        return request_problem
    if not isinstance(exc, PipelexError):
        logger.error("unexpected error in the runtime", exc_info=exc)
        return internal_error()
    try:
        problem = exc.to_problem(view=ProblemView.CALLER, request_id=request_id)
        document: dict[str, Any] = problem.model_dump(mode="json", exclude_none=True)
    except Exception:  # a broken problem must not turn into a leak
        logger.exception("could not render the runtime's problem")
        return internal_error()
    code = str(document.get("code") or "runtime.unexpected")
    if code == "runtime.unexpected":
        refused = _provider_refusal(exc)
        if refused is not None:
            return refused
    status, title, type_uri = registry_entry(code)
    status = status or 500
    if status >= 500 and code.startswith(("runtime.", "pipelex.config")):
        logger.error("runtime failure %s", code, exc_info=exc)
    members = {key: document[key] for key in _KEPT_MEMBERS if key in document}
    return ApiProblem(
        status=status,
        code=code,
        detail=str(document.get("detail") or title or "The run failed."),
        title=str(document.get("title") or title or ""),
        type_uri=document.get("type") or type_uri,
        **members,
    )
