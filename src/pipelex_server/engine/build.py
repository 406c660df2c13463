"""Build helpers: an inputs template, the output's shape, and runner scripts for one pipe of a bundle.

Each helper loads the bundle into a library of its own (``acquire_library_async``), asks the runtime's renderers
about the pipe, and tears the library down before it answers, failures included. The runtime's one-call helper
(``pipeline.inputs_template.build_inputs_for_pipe``) is not used: it leaves its library open on every call.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import pprint
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pipelex_server.errors import ApiProblem

RUNNER_DEFAULT_URL = "http://127.0.0.1:8081"
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
async def _loaded_pipe(mthds_contents: list[str], pipe_code: str | None) -> AsyncIterator[tuple[Any, str]]:
    """The selected pipe (``pipe_code``, else the bundle's main_pipe) and its library's id, for the block only.

    Runtime failures become problem documents (422 for a bad bundle or an unknown pipe)."""
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
        library_id, main_pipe_ref = await acquire_library_async("", mthds_contents=mthds_contents, library_dirs=[])
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise problem_from_exception(exc, request_id=None) from exc
    try:
        if pipe_code:
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


async def build_inputs(*, mthds_contents: list[str], pipe_code: str | None, fmt: str) -> InputsTemplate:
    """An inputs template for the pipe, as a JSON object or as TOML text."""
    from pipelex.pipe_machinery.rendering.input_renderer import build_concept_comments, serialize_inputs_template_to_toml

    async with _loaded_pipe(mthds_contents, pipe_code) as (pipe, _library_id):
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


async def build_output(*, mthds_contents: list[str], pipe_code: str | None, fmt: str) -> OutputShape:
    """The pipe's output as JSON Schema (``schema``), as an example instance (``json``) or as pydantic classes
    (``python``). All three describe the main result's ``content`` as /pipeline/execute returns it."""
    from pipelex.pipeline.pipe_io_contracts import build_pipe_io_contracts

    async with _loaded_pipe(mthds_contents, pipe_code) as (pipe, library_id):
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


# ---------------------------------------------------------------- runner scripts


def _python_str(text: str) -> str:
    """A Python literal for ``text``: a readable raw triple-quoted string when that round-trips, else repr()."""
    if '"""' not in text and not text.endswith(('"', "\\")) and "\r" not in text:
        candidate = f'r"""{text}"""'
        with contextlib.suppress(Exception):
            if ast.literal_eval(candidate) == text:
                return candidate
    return repr(text)


def _python_value(value: Any) -> str:
    return pprint.pformat(value, indent=4, width=100, sort_dicts=False)


_PRINT_CONTENT = '''

def print_content(content: object) -> None:
    """A text result prints as text; anything else as JSON."""
    if isinstance(content, dict) and set(content) == {"text"} and isinstance(content["text"], str):
        print(content["text"])
    else:
        print(json.dumps(content, indent=2, ensure_ascii=False))
'''

_HTTP_MAIN = """

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="mock every inference call (no provider is called)")
    args = parser.parse_args()
    server_url = os.environ.get("PIPELEX_SERVER_URL", DEFAULT_SERVER_URL).rstrip("/")
    token = os.environ.get("PIPELEX_SERVER_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"pipe_code": PIPE_CODE, "mthds_contents": MTHDS_CONTENTS, "inputs": INPUTS, "dry_run": args.dry_run}
    try:
        response = httpx.post(f"{server_url}/api/v1/pipeline/execute", json=body, headers=headers, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        print(f"Cannot reach {server_url}: {exc}", file=sys.stderr)
        return 2
    if response.status_code != 200:
        try:
            problem = response.json()
            print(f"{response.status_code} {problem.get('code')}: {problem.get('detail')}", file=sys.stderr)
        except ValueError:
            print(f"{response.status_code}: {response.text}", file=sys.stderr)
        return 1
    result = response.json()
    print_content(result["pipe_output"]["working_memory"]["root"][result["main_stuff_name"]]["content"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
"""

_PIPELEX_MAIN = """

async def run(*, dry_run: bool) -> object:
    # library_dirs=[]: the bundle above is self-contained; no PIPELEXPATH library is loaded beside it.
    runner = PipelexMTHDSProtocol(pipe_run_mode=PipeRunMode.DRY if dry_run else PipeRunMode.LIVE, library_dirs=[])
    result = await runner.execute(pipe_code=PIPE_CODE, mthds_contents=MTHDS_CONTENTS, inputs=INPUTS)
    return result.pipe_output.main_stuff.model_dump(mode="json", serialize_as_any=True)["content"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="mock every inference call (no provider key needed)")
    args = parser.parse_args()
    pipelex = Pipelex.make(needs_inference=not args.dry_run)
    try:
        content = asyncio.run(run(dry_run=args.dry_run))
    finally:
        pipelex.teardown()
    print_content(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
"""


def _embedded(pipe_ref: str, mthds_contents: list[str], inputs: dict[str, Any]) -> str:
    bundles = "".join(f"    {_python_str(text)},\n" for text in mthds_contents)
    return (
        f"PIPE_CODE = {pipe_ref!r}\n"
        f"MTHDS_CONTENTS = [\n{bundles}]\n"
        "# Placeholder values that show each input's shape: replace them with your own.\n"
        f"INPUTS = {_python_value(inputs)}\n"
    )


def _http_script(pipe_ref: str, mthds_contents: list[str], inputs: dict[str, Any]) -> str:
    header = f'''#!/usr/bin/env python3
"""Run the pipe '{pipe_ref}' on a pipelex-server, over HTTP, and print its main result.

Needs httpx (pip install httpx). Environment:
  PIPELEX_SERVER_URL    the server's base URL (default {RUNNER_DEFAULT_URL})
  PIPELEX_SERVER_TOKEN  API key or JWT, sent as "Authorization: Bearer <token>" when set
Usage: python <this script> [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import httpx

DEFAULT_SERVER_URL = {RUNNER_DEFAULT_URL!r}
TIMEOUT = httpx.Timeout(600.0, connect=10.0)  # a live run waits for its result
'''
    return header + _embedded(pipe_ref, mthds_contents, inputs) + _PRINT_CONTENT + _HTTP_MAIN


def _pipelex_script(pipe_ref: str, mthds_contents: list[str], inputs: dict[str, Any]) -> str:
    from importlib import metadata

    try:
        version = metadata.version("pipelex")
    except metadata.PackageNotFoundError:  # pragma: no cover - the server runs on pipelex
        version = "unknown"
    header = f'''#!/usr/bin/env python3
"""Run the pipe '{pipe_ref}' locally with the pipelex library, and print its main result.

Needs pipelex (pip install "pipelex=={version}"). A live run needs the provider credentials the pipe's models use
(OPENAI_API_KEY, ANTHROPIC_API_KEY, ...); --dry-run mocks every inference call and needs none.
Usage: python <this script> [--dry-run]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from pipelex.pipelex import Pipelex
from pipelex.pipeline.runner import PipelexMTHDSProtocol
from pipelex.system.pipe_run_mode import PipeRunMode

'''
    return header + _embedded(pipe_ref, mthds_contents, inputs) + _PRINT_CONTENT + _PIPELEX_MAIN


async def build_runner(*, mthds_contents: list[str], pipe_code: str | None, target: str) -> RunnerScript:
    """A ready-to-run Python script for the pipe: over HTTP against this server (``http``), or local (``pipelex``)."""
    async with _loaded_pipe(mthds_contents, pipe_code) as (pipe, _library_id):
        pipe_ref = pipe.pipe_ref
        inputs = _inputs_template(pipe)
    if target == "http":
        code = _http_script(pipe_ref, mthds_contents, inputs)
        message = f"A script that runs pipe '{pipe_ref}' on this server over HTTP (set PIPELEX_SERVER_URL, PIPELEX_SERVER_TOKEN)."
    else:
        code = _pipelex_script(pipe_ref, mthds_contents, inputs)
        message = f"A script that runs pipe '{pipe_ref}' locally with the pipelex library (--dry-run needs no provider key)."
    return RunnerScript(pipe_ref=pipe_ref, python_code=code, message=message)
