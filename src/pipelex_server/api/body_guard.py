"""Hostile values in a decoded JSON body, refused before anything else reads the body.

Python's JSON decoder accepts what nothing downstream can handle: lone UTF-16 surrogates (``"\\ud800"``), which
no UTF-8 encoder, response or database can write; NUL characters, which PostgreSQL text refuses; ``NaN`` and
``Infinity`` (and ``1e400``, decoded as infinity), which are not JSON and which PostgreSQL's json type refuses;
and nesting as deep as the recursion limit, which recursive code further on (fingerprints, the run store's encoder,
the runtime) does not survive. ``check_body`` walks the decoded body once, without recursion (a second walk, which
keeps paths, runs only to locate a value the first found), and raises its problem with its location. The same walk refuses, under ``inputs``, the object keys that
could name a Python class on a kajson round-trip.

Every request model inherits ``GuardedBody``, whose first validator runs this check on the raw decoded body.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, model_validator

from pipelex_server.api.toml_depth import MAX_TOML_DEPTH, toml_excess
from pipelex_server.errors import ApiProblem

MAX_JSON_DEPTH = 100  # the body object is level 1
RESERVED_KEYS = ("__class__", "__module__")
RESERVED_PREFIX = "__kajson"

_WALKED = frozenset({str, dict, list, float})
_NUMBERS = frozenset({float, int})
_STRINGS = {str}

Path = tuple[Any, ...] | None  # a linked path (parent, segment): one small tuple per container, flattened on error


def _flatten(path: Path) -> list[Any]:
    segments: list[Any] = []
    while path is not None:
        path, segment = path
        segments.append(_printable(segment) if isinstance(segment, str) else segment)
    segments.reverse()
    return segments


def _printable(text: str) -> str:
    """A string that can be written back in a problem document (lone surrogates escaped as ``\\udXXX``)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _text_fault(text: str) -> str | None:
    """Why a string cannot be accepted, or None. Cheap: ``isascii`` is O(1), and a surrogate can only be in a
    string wider than Latin-1, which encodes as UTF-16 at copying speed (or fails on the surrogate)."""
    if "\x00" in text:
        return "nul"
    if text.isascii():
        return None
    try:
        text.encode("latin-1")
        return None
    except UnicodeEncodeError:
        pass
    try:
        text.encode("utf-16-le")
    except UnicodeEncodeError:
        return "surrogate"
    return None


def _problem(fault: str, path: Path, *, is_key: bool = False) -> ApiProblem:
    where = ["body", *_flatten(path)]
    shown = ".".join(str(segment) for segment in where[1:9]) + (".…" if len(where) > 9 else "") or "the body"
    what = "an object key at" if is_key else "the value at"
    if fault == "depth":
        return ApiProblem(
            status=422,
            code="request.too_deeply_nested",
            detail=f"The request body nests more than {MAX_JSON_DEPTH} levels deep (at {shown}).",
            location={"path": where},
            params={"limit": MAX_JSON_DEPTH},
        )
    if fault == "surrogate":
        detail = f"The request holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair) in {what} {shown}."
        return ApiProblem(status=422, code="request.invalid_text", detail=detail, location={"path": where})
    if fault == "nul":
        detail = f"The request holds a NUL character (\\u0000) in {what} {shown}; NUL is refused in any string."
        return ApiProblem(status=422, code="request.invalid_text", detail=detail, location={"path": where})
    if fault == "reserved":
        key = where[-1]
        return ApiProblem(
            status=422,
            code="input.reserved_key",
            detail=f"reserved key at {shown}: keys '__class__', '__module__' and '__kajson*' are refused",
            location={"path": where},
            params={"key": key},
        )
    return ApiProblem(
        status=422,
        code="request.malformed",
        detail=f"The number at {shown} is not finite (NaN, Infinity, or beyond ±1.8e308): JSON has no such numbers.",
        location={"path": where},
        params={"reason": "not_json"},
    )


def check_body(body: Any) -> None:
    """Raise the problem of the body's first hostile value (see the module docstring); return when there is none.

    A fast pass only answers whether there is one; the pass that finds where (slower: it keeps paths) runs only
    for a body that has one."""
    if _has_fault(body):
        problem = _locate(body)
        if problem is not None:  # None: a reserved-looking key outside inputs, which is allowed
            raise problem


def _has_fault(body: Any) -> bool:
    """Level by level (no per-node tuple): the containers of one depth, then those they hold."""
    clean_keys: set[str] = set()  # the decoder shares one str per distinct key: each is checked once
    level = [body]
    depth = 1
    while level:
        if depth > MAX_JSON_DEPTH:
            return True
        below: list[Any] = []
        for node in level:
            if type(node) is dict:
                for key in node:
                    if key not in clean_keys:
                        if _text_fault(key) is not None:
                            return True
                        if key in RESERVED_KEYS or key.startswith(RESERVED_PREFIX):
                            return True  # refused only under inputs: the slow pass decides
                        clean_keys.add(key)
                values: Any = node.values()
            elif type(node) is list:
                kinds = set(map(type, node))  # at C speed: lists of plain numbers need no walk
                if not kinds & _WALKED:
                    continue
                if kinds <= _NUMBERS:
                    try:
                        if not all(map(math.isfinite, node)):
                            return True
                        continue
                    except OverflowError:  # an integer past 1.8e308: walk the list instead
                        pass
                elif kinds == _STRINGS:
                    joined = "".join(node)  # one copy, then one C-speed check for the whole list
                    if _text_fault(joined) is not None:
                        return True
                    continue
                values = node
            else:  # a scalar body
                values = (node,)
            for value in values:
                kind = type(value)
                if kind is str:
                    if ("\x00" in value or not value.isascii()) and _text_fault(value) is not None:
                        return True
                elif kind is dict or kind is list:
                    below.append(value)
                elif kind is float and not math.isfinite(value):
                    return True
        level = below
        depth += 1
    return False


def _locate(body: Any) -> ApiProblem | None:
    """The problem of the first hostile value, with its path (depth first, keeping each container's path)."""
    if type(body) is not dict and type(body) is not list:
        return _scalar_problem(body, None) or _problem("depth", None)
    stack: list[tuple[Any, int, Path, bool]] = [(body, 1, None, False)]
    while stack:
        node, depth, path, reserved = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return _problem("depth", path)
        for key, value in node.items() if type(node) is dict else enumerate(node):
            if type(key) is str:
                fault = _text_fault(key)
                if fault is not None:
                    return _problem(fault, (path, key), is_key=True)
                if reserved and (key in RESERVED_KEYS or key.startswith(RESERVED_PREFIX)):
                    return _problem("reserved", (path, key))
            if type(value) is dict or type(value) is list:
                stack.append((value, depth + 1, (path, key), reserved or (depth == 1 and key == "inputs")))
            else:
                problem = _scalar_problem(value, (path, key))
                if problem is not None:
                    return problem
    return None


def _scalar_problem(value: Any, path: Path) -> ApiProblem | None:
    if type(value) is str:
        fault = _text_fault(value)
        return None if fault is None else _problem(fault, path)
    if type(value) is float and not math.isfinite(value):
        return _problem("not_finite", path)
    return None


def check_bundle_text(text: str, where: list[Any]) -> None:
    """422 ``request.too_deeply_nested`` for a bundle whose TOML nests past ``MAX_TOML_DEPTH``, naming the file."""
    offset = toml_excess(text)
    if offset is None:
        return
    line = text.count("\n", 0, offset) + 1
    raise ApiProblem(
        status=422,
        code="request.too_deeply_nested",
        detail=f"The bundle at {'.'.join(map(str, where[1:]))} nests more than {MAX_TOML_DEPTH} levels deep (line {line}).",
        location={"path": where, "line": line},
        params={"limit": MAX_TOML_DEPTH},
    )


class GuardedBody(BaseModel):
    """A request body: hostile JSON values are refused before validation, too deep bundles after it."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_hostile_values(cls, data: Any) -> Any:
        check_body(data)
        return data

    @model_validator(mode="after")
    def _refuse_too_deep_bundles(self) -> Any:
        for index, text in enumerate(getattr(self, "mthds_contents", None) or ()):
            check_bundle_text(text, ["body", "mthds_contents", index])
        return self


def unreadable_body_problem(cause: BaseException | None) -> ApiProblem:
    """The problem for a body the JSON decoder itself refused (the framework reports it as a bare 400)."""
    if isinstance(cause, RecursionError):
        return ApiProblem(
            status=422,
            code="request.too_deeply_nested",
            detail=f"The request body nests deeper than the JSON decoder can follow; at most {MAX_JSON_DEPTH} levels are accepted.",
            location={"path": ["body"]},
            params={"limit": MAX_JSON_DEPTH},
        )
    if isinstance(cause, UnicodeDecodeError):
        return ApiProblem(
            status=422,
            code="request.malformed",
            detail=f"The request body is not valid UTF-8 (byte {cause.start}).",
            location={"path": ["body"]},
            params={"reason": "not_utf8", "byte_offset": cause.start},
        )
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return ApiProblem(
            status=422,
            code="request.malformed",
            detail="The request body holds an integer of more than 4300 digits, which this server does not read.",
            location={"path": ["body"]},
            params={"reason": "not_json"},
        )
    return ApiProblem(
        status=422,
        code="request.malformed",
        detail="The request body is not valid JSON.",
        location={"path": ["body"]},
        params={"reason": "not_json"},
    )


def refuse_nul(text: str, where: list[Any]) -> None:
    """422 ``request.invalid_text`` for text decoded after the guard ran (a base64 file) that holds NUL."""
    if "\x00" in text:
        raise ApiProblem(
            status=422,
            code="request.invalid_text",
            detail=f"The file at {'.'.join(map(str, where[1:]))} holds a NUL character (\\u0000); NUL is refused in any text.",
            location={"path": where},
        )
