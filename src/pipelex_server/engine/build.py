"""Build helpers: an inputs template, the output's shape, and runner scripts for one pipe of a bundle.

Each helper loads the bundle into a library of its own (``acquire_library_async``), asks the runtime's renderers
about the pipe, and tears the library down before it answers, failures included. A method sent as a tree (`files`,
`bundle_b64`, with its dependencies) is written for the load as a run writes it (``engine/method_tree.py``) and loaded
as the caller's library directory; files sent beside inline bundles are the load's submitted files. The runtime's one-call helper
(``pipeline.inputs_template.build_inputs_for_pipe``) is not used: it leaves its library open on every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pipelex_server.engine.method_tree import written_tree
from pipelex_server.engine.method_tree_files import MethodTreeFiles
from pipelex_server.engine.scripts import http_script, pipelex_script
from pipelex_server.errors import ApiProblem

OUTPUT_CLASS_NAMES = ("Output", "PipeOutput", "MainOutput")


@dataclass
class InputsTemplate:
    pipe_ref: str
    template: dict[str, Any] | str
    message: str


@dataclass
class OutputShape:
    pipe_ref: str
    concept_ref: str
    multiplicity: str  # single | variable | fixed
    item_count: int | None
    artefact: Any  # JSON Schema (dict), example (JSON value) or Python source (str)
    python_class: str | None
    message: str


@dataclass
class RunnerScript:
    pipe_ref: str
    python_code: str
    message: str


# ---------------------------------------------------------------- the load window


@contextlib.asynccontextmanager
async def _loaded_pipe(
    mthds_contents: list[str] | None, pipe_code: str | None, tree: MethodTreeFiles | None = None
) -> AsyncIterator[tuple[Any, str]]:
    """The selected pipe (``pipe_code``, else the method's entry pipe) and its library's id, for the block only.

    Runtime failures become problem documents (422 for a bad bundle or an unknown pipe)."""
    from pipelex_server.engine.problems import problem_from_exception

    if tree is None or mthds_contents:
        submitted = dict(tree.contents) if tree is not None else None
        async with _loaded_library(pipe_code, mthds_contents=mthds_contents, submitted_files=submitted) as loaded:
            yield loaded
        return
    async with contextlib.AsyncExitStack() as stack:  # the written tree is removed on the way out, whatever happens
        try:
            written = await stack.enter_async_context(written_tree(tree, pipe_code=pipe_code, entry="optional"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise problem_from_exception(exc, request_id=None) from exc
        library_dirs = [str(written.directory)]
        async with _loaded_library(
            written.pipe_code, library_dirs=library_dirs, methods_dirs=written.methods_dirs, entry_chosen=pipe_code is None
        ) as loaded:
            yield loaded


@contextlib.asynccontextmanager
async def _loaded_library(
    pipe_code: str | None,
    *,
    mthds_contents: list[str] | None = None,
    submitted_files: dict[str, bytes] | None = None,
    library_dirs: list[str] | None = None,
    methods_dirs: Any = None,
    entry_chosen: bool = False,
) -> AsyncIterator[tuple[Any, str]]:
    """One library loaded from inline bundles (``library_dirs=[]``: self-contained, as on the run path) or from a
    written tree (the caller's library directory); its selected pipe and id for the block only."""
    from pipelex.interpreter_hub import (
        clear_current_library,
        get_current_library_id_or_none,
        get_library_manager,
        get_required_entry_pipe,
        get_required_pipe,
        get_selectable_own_pipe_refs,
        set_current_library,
    )
    from pipelex.pipeline.execution_seams import acquire_library_async

    from pipelex_server.engine.problems import problem_from_exception

    previous = get_current_library_id_or_none()
    try:
        # library_dirs=[]: an inline bundle is self-contained, as on the run path. On a failed load the runtime
        # tears the library down itself.
        library_id, main_pipe_ref = await acquire_library_async(
            "",
            mthds_contents=mthds_contents,
            library_dirs=library_dirs or [],
            library_dirs_are_callers=library_dirs is not None,
            methods_dirs=methods_dirs,
            submitted_files=submitted_files,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise problem_from_exception(exc, request_id=None) from exc
    try:
        if pipe_code and entry_chosen:  # the tree's entry, chosen by the protocol's rule: a qualified ref
            pipe = get_required_pipe(pipe_code=pipe_code)
        elif pipe_code:
            pipe = get_required_entry_pipe(pipe_code=pipe_code)
        elif main_pipe_ref:
            pipe = get_required_pipe(pipe_code=main_pipe_ref)
        else:
            raise ApiProblem(
                status=422,
                code="request.pipe_unspecified",
                detail="The bundle declares no main_pipe: give a pipe_code.",
                params={"candidates": sorted(get_selectable_own_pipe_refs())},
            )
        yield pipe, library_id
    except (asyncio.CancelledError, ApiProblem):
        raise
    except Exception as exc:
        raise problem_from_exception(exc, request_id=None) from exc
    finally:
        if previous is not None:
            set_current_library(library_id=previous)
        else:
            clear_current_library()
        get_library_manager().teardown(library_id=library_id)


# ---------------------------------------------------------------- inputs


def _inputs_template(pipe: Any) -> dict[str, Any]:
    """The runtime's light inputs template (what /pipeline/execute accepts), with fixed-count lists filled out."""
    from pipelex.core.pipes.inputs.exceptions import NoInputsRequiredError
    from pipelex.core.pipes.variable_multiplicity import fixed_item_count
    from pipelex.pipe_machinery.rendering.input_renderer import build_inputs_template

    try:
        template = build_inputs_template(pipe)
    except NoInputsRequiredError:
        return {}
    # The runtime shows one example item even for a `Concept[N]` input, which a run then refuses: repeat it N times.
    for name, spec in pipe.inputs.root.items():
        count = fixed_item_count(multiplicity=spec.multiplicity)
        if count is None or name not in template:
            continue
        value = template[name]
        if isinstance(value, list):
            template[name] = _repeat(value, count)
        elif isinstance(value, dict) and isinstance(value.get("content"), list):  # the envelope form
            value["content"] = _repeat(value["content"], count)
    return template


def _repeat(items: list[Any], count: int) -> list[Any]:
    if not items or len(items) == count:
        return items
    return [json.loads(json.dumps(items[index % len(items)])) for index in range(count)]


async def build_inputs(
    *, mthds_contents: list[str] | None, pipe_code: str | None, fmt: str, tree: MethodTreeFiles | None = None
) -> InputsTemplate:
    """An inputs template for the pipe, as a JSON object or as TOML text."""
    from pipelex.pipe_machinery.rendering.input_renderer import build_concept_comments, serialize_inputs_template_to_toml

    async with _loaded_pipe(mthds_contents, pipe_code, tree) as (pipe, _library_id):
        template = _inputs_template(pipe)
        pipe_ref = pipe.pipe_ref
        rendered: dict[str, Any] | str = template
        if fmt == "toml":
            rendered = (
                serialize_inputs_template_to_toml(template, light=True, concept_comments=build_concept_comments(pipe.inputs))
                if template
                else ""
            )
    if not template:
        message = f"Pipe '{pipe_ref}' declares no inputs."
    else:
        message = f"Inputs template for pipe '{pipe_ref}': {len(template)} input(s) with placeholder values."
    return InputsTemplate(pipe_ref=pipe_ref, template=rendered, message=message)


# ---------------------------------------------------------------- output


def _list_key() -> str:
    from pipelex.core.stuffs.list_content import ListContent

    return next(iter(ListContent.model_fields))  # "items": a plural output's payload is a ListContent


def _output_example(pipe: Any, *, is_multiple: bool, item_count: int | None) -> Any:
    """An example of the output's content as a run returns it (``pipe_output...root[main_stuff_name].content``).

    The runtime renders a plural output as a bare list, while a run returns it wrapped as ``{"items": [...]}``
    (the shape the output's JSON Schema states), so it is wrapped here; a fixed count gets that many items."""
    from pipelex.core.concepts.concept_representation_generator import ConceptRepresentationFormat
    from pipelex.pipe_machinery.rendering.output_renderer import render_output

    rendered = json.loads(render_output(pipe, output_format=ConceptRepresentationFormat.JSON))
    if "concept" in rendered and "content" in rendered:
        content = rendered["content"]
    else:  # native.Anything: one entry per possible output ("output_option_1", ...); show the first
        content = next(iter(rendered.values()))["content"]
    if isinstance(content, list):
        if item_count is not None:
            content = _repeat(content, item_count)
        content = {_list_key(): content}
    elif is_multiple:
        content = {_list_key(): [content] * (item_count or 1)}
    return content


def _output_python(pipe: Any, library_id: str, *, is_multiple: bool, item_count: int | None) -> tuple[str, str]:
    """The bundle's concepts as pydantic classes (the runtime's python-pydantic codegen), plus a class for the
    output's content. Returns (source, name of the output class)."""
    from mthds.package.manifest.schema import MTHDS_STANDARD_VERSION
    from pipelex.codegen.emitters.naming import python_class_name
    from pipelex.codegen.emitters.target import CodegenTarget
    from pipelex.codegen.emitters.types_emitter import emit_types
    from pipelex.codegen.resolved_concepts import resolve_concepts_from_crate
    from pipelex.interpreter_hub import get_library_manager
    from pipelex.libraries.crate_normalization import normalize_crate

    crate = get_library_manager().get_crate(library_id)
    if crate is None:  # pragma: no cover - a loaded bundle always makes a crate
        raise ApiProblem(status=500, code="runtime.unexpected", detail="The bundle produced no library crate.")
    crate = normalize_crate(crate, mthds_version=MTHDS_STANDARD_VERSION)
    source = "\n\n".join(emitted.content.rstrip("\n") for emitted in emit_types(crate, target=CodegenTarget.PYTHON_PYDANTIC))
    concepts = resolve_concepts_from_crate(crate).concepts
    names = {c.concept_ref: python_class_name(domain=c.domain, code=c.code, needs_qualification=c.needs_qualification) for c in concepts}
    concept_ref = pipe.output.concept.concept_ref
    item_class = names.get(concept_ref)
    taken = set(names.values())
    output_class = next((name for name in OUTPUT_CLASS_NAMES if name not in taken), "PipelexServerOutput")
    comment = f"# The output of pipe '{pipe.pipe_ref}' ({pipe.output.to_bundle_representation()}), as a run returns its content."
    if item_class is not None and not is_multiple:
        trailer = [comment, f"{output_class} = {item_class}"]
    else:
        # a list output, or an output whose concept comes from outside the bundle (its shape is not known here)
        item = item_class or "dict[str, _typing.Any]"
        body = [f'    """A list of {concept_ref}."""' if is_multiple else f'    """{concept_ref}, kept as is."""', ""]
        if is_multiple:
            bounds = f", min_length={item_count}, max_length={item_count}" if item_count is not None else ""
            body.append(f"    {_list_key()}: list[{item}] = _Field(...{bounds})")
        else:
            body.append('    model_config = _ConfigDict(extra="allow")')
        trailer = [
            comment,
            "import typing as _typing  # noqa: E402, F401",
            "",
            "from pydantic import BaseModel as _BaseModel, ConfigDict as _ConfigDict, Field as _Field  # noqa: E402, F401",
            "",
            "",
            f"class {output_class}(_BaseModel):",
            *body,
        ]
    return source + "\n\n\n" + "\n".join(trailer) + "\n", output_class


async def build_output(
    *, mthds_contents: list[str] | None, pipe_code: str | None, fmt: str, tree: MethodTreeFiles | None = None
) -> OutputShape:
    """The pipe's output as JSON Schema (``schema``), as an example instance (``json``) or as pydantic classes
    (``python``). All three describe the main result's ``content`` as /pipeline/execute returns it."""
    from pipelex.pipeline.pipe_io_contracts import build_pipe_io_contracts

    async with _loaded_pipe(mthds_contents, pipe_code, tree) as (pipe, library_id):
        # The runtime's own output contract (the one /validate reports), so the three formats agree with it.
        contract = next(iter(build_pipe_io_contracts([pipe]).values())).output
        multiplicity = str(getattr(contract.multiplicity, "value", contract.multiplicity))
        is_multiple = multiplicity != "single"
        python_class: str | None = None
        if fmt == "schema":
            artefact: Any = contract.json_schema
        elif fmt == "json":
            artefact = _output_example(pipe, is_multiple=is_multiple, item_count=contract.item_count)
        else:
            artefact, python_class = _output_python(pipe, library_id, is_multiple=is_multiple, item_count=contract.item_count)
        shape = OutputShape(
            pipe_ref=pipe.pipe_ref,
            concept_ref=contract.concept_ref,
            multiplicity=multiplicity,
            item_count=contract.item_count,
            artefact=artefact,
            python_class=python_class,
            message="",
        )
    described = {"schema": "JSON Schema", "json": "Example", "python": f"Pydantic classes (output class {python_class})"}[fmt]
    shape.message = f"{described} of the output of pipe '{shape.pipe_ref}' ({shape.concept_ref}, {multiplicity})."
    return shape


async def build_runner(
    *, mthds_contents: list[str] | None, pipe_code: str | None, target: str, tree: MethodTreeFiles | None = None
) -> RunnerScript:
    """A ready-to-run Python script for the pipe: over HTTP against this server (``http``), or local (``pipelex``)."""
    async with _loaded_pipe(mthds_contents, pipe_code, tree) as (pipe, _library_id):
        pipe_ref = pipe.pipe_ref
        inputs = _inputs_template(pipe)
    # a tree's script carries its bundles inline (its other files are not embedded)
    mthds_contents = mthds_contents or (tree.bundle_texts() if tree is not None else [])
    if target == "http":
        code = http_script(pipe_ref, mthds_contents, inputs)
        message = f"A script that runs pipe '{pipe_ref}' on this server over HTTP (set PIPELEX_SERVER_URL, PIPELEX_SERVER_TOKEN)."
    else:
        code = pipelex_script(pipe_ref, mthds_contents, inputs)
        message = f"A script that runs pipe '{pipe_ref}' locally with the pipelex library (--dry-run needs no provider key)."
    return RunnerScript(pipe_ref=pipe_ref, python_code=code, message=message)
