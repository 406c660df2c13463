"""A method tree resolved to its normalized library crate, and what `/v1/resolve`, `/v1/pipe-io` and `/v1/codegen` make
of it: the crate itself, the I/O artifacts of a pipe it selects, or its typed projections.

Resolution is static, as the runtime's `resolve_crate_from_method_dir` does it: the tree is written out by
``method_tree.written_tree`` (the one tree writer) and loaded alone as the caller's library directory; no dry run,
nothing fetched, no installed method read. It binds the loaded library as current in a context variable, so the load,
the projection and the teardown run in one call of the runtime's method-load pool, never on the event loop. A library
that does not resolve is the produced invalid verdict (a 200, `is_valid: false`, its problem items); a selection or
an argument that cannot be served is a 4xx problem; the whole call is bounded by ``CRATE_TIME_LIMIT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

from pipelex_server.engine.method_tree import written_tree
from pipelex_server.engine.method_tree_files import MethodTreeFiles
from pipelex_server.errors import ApiProblem

logger = logging.getLogger(__name__)

CRATE_TIME_LIMIT_SECONDS = 120.0  # one resolution and its projection, writing and removing the tree included
CRATE_RETRY_AFTER_SECONDS = 5

_windows: set[asyncio.Future[dict[str, Any]]] = set()

# Where a pipe selector came from: it picks the refusal's code (who must act on it).
REQUEST, MANIFEST, CLOSURE, NONE = "request", "manifest", "closure", "none"


def codegen_choices() -> dict[str, list[str]]:
    """The projection axes the runtime offers: `kind` (stamped kinds) and `target`."""
    from pipelex.codegen.emitters.target import CodegenKind, CodegenTarget

    return {"kind": [kind.value for kind in CodegenKind], "target": [target.value for target in CodegenTarget]}


def check_codegen_axes(kind: str, target: str, pipe_ref: str | None) -> None:
    """422 `request.invalid` naming `kind`, `target` or `pipe_ref` when the runtime cannot project what is asked."""
    from pipelex_server.engine.tools import field_problem

    choices = codegen_choices()
    for name, value in (("kind", kind), ("target", target)):
        if value not in choices[name]:
            raise field_problem(name, f"Unknown codegen {name} {value[:64]!r}. Valid values: {', '.join(choices[name])}.")
    if pipe_ref is not None:  # every kind the runtime stamps today is concept-set-wide
        raise field_problem("pipe_ref", f"pipe_ref is not accepted for kind={kind!r} (a projection of the whole concept set).")


# ---------------------------------------------------------------------------------------------------- the one window


async def _in_resolved_library(tree: MethodTreeFiles, project: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Write the tree, resolve it, and return ``project(crate)`` (or the invalid verdict), the tree removed after."""
    from pipelex.libraries.method_load_threads import run_method_load

    from pipelex_server.engine.problems import problem_from_exception

    async def window() -> dict[str, Any]:
        async with written_tree(tree, pipe_code=None, entry="none") as written:
            return await run_method_load(_resolve_and_project, written.directory, written.methods_dirs, project)

    task = asyncio.ensure_future(window())
    # a window left behind (past the limit, or its request gone) is held until it ends, its outcome retrieved
    _windows.add(task)
    task.add_done_callback(_windows.discard)
    task.add_done_callback(lambda ended: ended.cancelled() or ended.exception())
    done, _ = await asyncio.wait({task}, timeout=CRATE_TIME_LIMIT_SECONDS)
    if not done:
        # the load runs on in its thread (it cannot be interrupted); the tree is removed once it ends
        raise ApiProblem(
            status=503,
            code="runtime.unavailable",
            detail=f"Resolving the method took longer than {CRATE_TIME_LIMIT_SECONDS:.0f}s; send it again later.",
            headers={"Retry-After": str(CRATE_RETRY_AFTER_SECONDS)},
        )
    try:
        return task.result()
    except ApiProblem:
        raise
    except Exception as exc:
        raise problem_from_exception(exc, request_id=None) from exc


def _resolve_and_project(directory: Any, methods_dirs: Any, project: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Blocking, in one pool thread: resolve, project while the library is loaded and current, tear it down."""
    from pipelex.interpreter_hub import clear_current_library, get_current_library_id_or_none, get_library_manager
    from pipelex.pipeline.exceptions import ValidateBundleError
    from pipelex.pipeline.resolve_bundle import resolve_crate_from_method_dir

    try:
        # the packages the request shipped (`dependencies`) are the only place an address reference is looked up
        crate = resolve_crate_from_method_dir(method_dir=directory, methods_dirs=methods_dirs)
    except ValidateBundleError as exc:  # the produced verdict; the runtime already tore its library down
        return _invalid_verdict(exc)
    try:
        return project(crate)
    finally:
        library_id = get_current_library_id_or_none()
        clear_current_library()
        if library_id is not None:
            get_library_manager().teardown(library_id=library_id)


def _invalid_verdict(error: Any) -> dict[str, Any]:
    """The invalid arm: the verdict's problem items, in a caller's view, and the sentence its code renders."""
    from pipelex.errors.problem import ProblemView

    problem = error.to_problem(view=ProblemView.CALLER)
    items = [item.model_dump(mode="json", serialize_as_any=True, by_alias=True, exclude_none=True) for item in problem.errors or []]
    return {"is_valid": False, "errors": items, "message": problem.detail}


# ---------------------------------------------------------------------------------------------------- resolve, codegen


async def resolve(tree: MethodTreeFiles) -> dict[str, Any]:
    """The normalized library crate (canonical JSON encoding, fingerprint included), or the invalid verdict."""

    def crate_answer(crate: Any) -> dict[str, Any]:
        from pipelex.codegen.crate_encoding import encode_crate_json

        return {"is_valid": True, "crate": json.loads(encode_crate_json(crate)), "message": "MTHDS library resolved successfully"}

    return await _in_resolved_library(tree, crate_answer)


async def crate_fingerprint(tree: MethodTreeFiles) -> str | None:
    """The fingerprint of the crate the method resolves to (what a published version records); None when it does not
    resolve in memory (a method calling another package by address, say) or the runtime fails on it."""
    try:
        answer = await _in_resolved_library(tree, lambda crate: {"is_valid": True, "fingerprint": crate.fingerprint})
    except Exception:
        logger.warning("the crate fingerprint of a method could not be computed", exc_info=True)
        return None
    fingerprint = answer.get("fingerprint") if answer.get("is_valid") else None
    return fingerprint if isinstance(fingerprint, str) else None


async def codegen(tree: MethodTreeFiles, *, kind: str, target: str) -> dict[str, Any]:
    """The crate's stamped artifacts and their `codegen.lock`, as a local `pipelex codegen` writes them; or the invalid
    verdict. ``kind`` and ``target`` were checked by ``check_codegen_axes``."""

    def projection_answer(crate: Any) -> dict[str, Any]:
        from pipelex.codegen.emission import build_stamped_projection
        from pipelex.codegen.emitters.target import CodegenKind, CodegenTarget
        from pipelex.codegen.emitters.types_emitter import emit_types
        from pipelex.codegen.lock import CODEGEN_LOCK_FILENAME
        from pipelex.tools.misc.package_utils import get_package_version

        engine_version = get_package_version()
        projection = build_stamped_projection(
            emit_types(crate, target=CodegenTarget(target)),
            crate_fingerprint=crate.fingerprint,
            engine_version=engine_version,
            kind=CodegenKind(kind),
            target=CodegenTarget(target),
        )
        return {
            "is_valid": True,
            "kind": kind,
            "target": target,
            "crate_fingerprint": crate.fingerprint,
            "engine_version": engine_version,
            "artifacts": [{"path": stamped.filename, "content": stamped.content} for stamped in projection.files],
            "lock": projection.lock_content,
            "lock_filename": CODEGEN_LOCK_FILENAME,
            "message": "Codegen artifacts generated successfully",
        }

    return await _in_resolved_library(tree, projection_answer)


# ---------------------------------------------------------------------------------------------------- pipe-io


@dataclass(frozen=True)
class Selected:
    ref: str
    pipe: Any


@dataclass(frozen=True)
class Miss:
    """A selector that selected no pipe: why (`ambiguous` or not found), where it came from, what it offered."""

    ambiguous: bool
    origin: str
    message: str
    selector: str | None = None
    candidates: tuple[str, ...] = ()


def _lookup(selector: str, origin: str) -> Selected | Miss:
    """One selector through the runtime's entry lookup; the ref is read back off the pipe (a bare code comes back
    qualified)."""
    from pipelex.interpreter_hub import get_required_entry_pipe
    from pipelex.libraries.pipe.exceptions import EntryPipeAmbiguousError, PipeNotFoundError

    try:
        pipe = get_required_entry_pipe(pipe_code=selector)
    except EntryPipeAmbiguousError as exc:
        found = tuple(exc.given_params.get("candidates") or ())
        return Miss(True, origin, f"Pipe {selector!r} ({origin}) matches pipes in several domains: {exc}", selector, found)
    except PipeNotFoundError as exc:
        found = tuple(exc.given_params.get("suggestions") or ())
        return Miss(False, origin, f"Pipe {selector!r} ({origin}) is not in the method: {exc}", selector, found)
    return Selected(ref=pipe.pipe_ref, pipe=pipe)


def default_pipe(crate: Any, manifest_main_pipe: str | None) -> Selected | Miss:
    """The method's own entry pipe, by the run routes' precedence: the manifest's `main_pipe`, else the one `main_pipe`
    the closure declares (none, or several across domains, is a miss: there is nothing to default to)."""
    if manifest_main_pipe:
        return _lookup(manifest_main_pipe, MANIFEST)
    declared = sorted(f"{code}.{domain.main_pipe}" for code, domain in crate.domains.items() if domain.main_pipe)
    if not declared:
        return Miss(False, NONE, "No pipe_ref was given and the method declares no main_pipe.", None, tuple(sorted(crate.pipes)))
    if len(declared) > 1:
        return Miss(
            True, NONE, f"No pipe_ref was given and the method declares several main_pipes: {', '.join(declared)}.", None, tuple(declared)
        )
    return _lookup(declared[0], CLOSURE)


def refuse(miss: Miss) -> NoReturn:
    """Raise a miss as the runtime's entry-lookup error with the code that says who must act: the caller for a selector
    it sent or a request naming none, the method's author for a `main_pipe` it declares. The route's translation
    renders it from the MTHDS registry, as the run routes render the same refusal."""
    from mthds.protocol.problem.registry import CoreCode
    from pipelex.libraries.pipe.exceptions import EntryPipeAmbiguousError, EntryPipeNotFoundError
    from pipelex.libraries.pipe.pipe_suggestions import MAIN_PIPE_DECLARATION

    candidates = list(miss.candidates)
    error: Any = EntryPipeAmbiguousError(miss.message) if miss.ambiguous else EntryPipeNotFoundError(miss.message)
    if miss.origin == NONE:
        raise error.with_error_code(CoreCode.REQUEST_PIPE_UNSPECIFIED).with_params(candidates=candidates)
    if miss.origin == REQUEST and miss.ambiguous:
        raise error.with_error_code(CoreCode.REQUEST_PIPE_AMBIGUOUS).with_params(pipe=miss.selector, candidates=candidates)
    if miss.origin == REQUEST:
        raise error.with_error_code(CoreCode.REQUEST_PIPE_NOT_FOUND).with_params(pipe=miss.selector, suggestions=candidates)
    if miss.ambiguous:
        raise error.with_error_code(CoreCode.METHOD_REF_AMBIGUOUS).with_params(ref=miss.selector, candidates=candidates)
    raise error.with_error_code(CoreCode.METHOD_PIPE_UNRESOLVED).with_params(
        pipe=MAIN_PIPE_DECLARATION, missing=miss.selector, candidates=candidates
    )


def manifest_main_pipe(tree: MethodTreeFiles) -> str | None:
    """The `main_pipe` of the tree's `METHODS.toml` (already checked when the tree was read), or None."""
    from mthds.method_tree.discovery import MANIFEST_NAME
    from mthds.package.manifest.parser import parse_methods_toml

    data = tree.contents.get(MANIFEST_NAME)
    return parse_methods_toml(data.decode("utf-8")).main_pipe if data is not None else None


def _dump(artifact: Any) -> Any:
    """An artifact map (qualified pipe ref -> the standard's model) as JSON, null members kept (`item_count: null`)."""
    return {ref: item.model_dump(mode="json", serialize_as_any=True, by_alias=True) for ref, item in artifact.items()}


async def pipe_io(tree: MethodTreeFiles, *, pipe_ref: str | None, all_pipes: bool, include_files: bool) -> dict[str, Any]:
    """The I/O contracts, input form and output form of the selected pipe (of every pipe with ``all_pipes``), its
    qualified ref, the method's own default pipe, and the pending signatures; no dry run. Or the invalid verdict."""
    main_pipe = manifest_main_pipe(tree)

    def artifacts_answer(crate: Any) -> dict[str, Any]:
        from pipelex.interpreter_hub import get_own_pipes, get_pipe_library
        from pipelex.pipeline.build_pipe_io_artifacts import build_pipe_io_artifacts
        from pipelex.pipeline.validate_bundle import build_pending_signatures

        default = default_pipe(crate, main_pipe)
        default_ref = default.ref if isinstance(default, Selected) else None
        requested = _lookup(pipe_ref, REQUEST) if pipe_ref is not None else default
        if isinstance(requested, Miss) and (pipe_ref is not None or not all_pipes):
            refuse(requested)
        selected_ref = requested.ref if isinstance(requested, Selected) else None
        if all_pipes:
            described = list(get_own_pipes())  # the closure's own pipes, in load order
        else:
            assert isinstance(requested, Selected)
            described = [requested.pipe]
        artifacts = build_pipe_io_artifacts(described)
        pending = build_pending_signatures(get_pipe_library().get_pipes_dict())
        answer: dict[str, Any] = {
            "is_valid": True,
            "pipe_ref": selected_ref,
            "pipe_io_contracts": _dump(artifacts.pipe_io_contracts),
            "input_form": _dump(artifacts.input_form),
            "output_form": _dump(artifacts.output_form),
            "default_pipe_ref": default_ref,
            "pending_signatures": pending,
            "is_runnable": not pending,
        }
        if include_files:
            answer["files"] = {
                path: data.decode("utf-8", "replace") for path, data in sorted(tree.contents.items()) if path.endswith(".mthds")
            }
        return answer

    return await _in_resolved_library(tree, artifacts_answer)
