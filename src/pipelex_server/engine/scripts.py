"""Runner scripts as text: a Python program that runs one pipe over HTTP against this server, or locally with pipelex."""

from __future__ import annotations

import ast
import contextlib
import pprint
from typing import Any

RUNNER_DEFAULT_URL = "http://127.0.0.1:8081"


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


def http_script(pipe_ref: str, mthds_contents: list[str], inputs: dict[str, Any]) -> str:
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


def pipelex_script(pipe_ref: str, mthds_contents: list[str], inputs: dict[str, Any]) -> str:
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
