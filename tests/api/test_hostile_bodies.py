"""Hostile request bodies get a 4xx problem document on every route that takes a bundle, a tree or inputs, live and
dry, and the server keeps serving: deep TOML, deep JSON, lone surrogates, NUL, non-finite and over-long numbers,
bytes that are not UTF-8, bundles that make the runtime recurse. Also the TOML nesting scanner on tricky text."""

from __future__ import annotations

import contextlib
import json
import tomllib
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelex_server.api.body_guard import MAX_JSON_DEPTH
from pipelex_server.api.toml_depth import MAX_TOML_DEPTH, toml_excess
from tests.support import bundles
from tests.support.bundles import SEED_BUNDLE, SEED_TEXT, seed_request
from tests.support.server import ServerProcess

ROUTES = {
    "api.execute": "/api/v1/pipeline/execute",
    "api.start": "/api/v1/pipeline/start",
    "api.validate": "/api/v1/validate",
    "build.inputs": "/api/v1/build/inputs",
    "build.output": "/api/v1/build/output",
    "build.runner": "/api/v1/build/runner",
    "v1.execute": "/v1/execute",
    "v1.start": "/v1/start",
    "v1.validate": "/v1/validate",
}
RUN_ROUTES = ("api.execute", "api.start", "v1.execute", "v1.start")
FILE = "hello.mthds"
# (route, dry_run): the run routes live and dry, the others once
ROUTE_MODES = [(route, dry) for route in ROUTES for dry in ((True, False) if route in RUN_ROUTES else (True,))]


def body_for(route: str, bundle: str = SEED_BUNDLE, *, inputs: Any = None, dry: bool = True, pipe_code: str = "summarize") -> dict:
    inputs = {"text": SEED_TEXT} if inputs is None else inputs
    if route.startswith("v1."):
        body: dict[str, Any] = {"files": {FILE: bundle}, "pipe_code": pipe_code}
    else:
        body = {"mthds_contents": [bundle], "pipe_code": pipe_code}
    if route in RUN_ROUTES:
        body.update(inputs=inputs, dry_run=dry)
    extra = {"build.inputs": {"format": "json"}, "build.output": {"format": "schema"}, "build.runner": {"target": "http"}}
    return {**body, **extra.get(route, {})}


def bundle_path(route: str) -> list:
    return ["body", "files", FILE] if route.startswith("v1.") else ["body", "mthds_contents", 0]


def value_path(route: str) -> list:
    """Where the cases below put a hostile JSON value: in an input on the run routes, else as the bundle."""
    return ["body", "inputs", "text"] if route in RUN_ROUTES else ["body", "mthds_contents", 0]


def with_value(route: str, value: Any, dry: bool) -> dict:
    body = body_for(route, dry=dry)
    if route in RUN_ROUTES:
        body["inputs"] = {"text": value}
    else:
        body.pop("files", None)
        body["mthds_contents"] = [value]
    return body


def deep_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


DEEP = 10_000
Case = Callable[[str, bool], tuple[bytes, str, list | None]]
CASES: dict[str, Case] = {
    # bundles that nest 10,000 levels: inline arrays, inline tables, a table header, a dotted key
    "toml_arrays": lambda r, d: (
        body(r, d, SEED_BUNDLE + "x = " + "[" * DEEP + "]" * DEEP + "\n"),
        "request.too_deeply_nested",
        bundle_path(r),
    ),
    "toml_tables": lambda r, d: (
        body(r, d, SEED_BUNDLE + "x = " + "{a = " * DEEP + "1" + "}" * DEEP + "\n"),
        "request.too_deeply_nested",
        bundle_path(r),
    ),
    "toml_header": lambda r, d: (body(r, d, SEED_BUNDLE + "[" + ".".join("a" * DEEP) + "]\n"), "request.too_deeply_nested", bundle_path(r)),
    "toml_dotted_key": lambda r, d: (
        body(r, d, ".".join("a" * DEEP) + " = 1\n" + SEED_BUNDLE),
        "request.too_deeply_nested",
        bundle_path(r),
    ),
    # text that is not valid Unicode, or holds NUL
    "surrogate_in_bundle": lambda r, d: (
        body(r, d, SEED_BUNDLE.replace("Summarize the", "Summarize \ud800 the")),
        "request.invalid_text",
        bundle_path(r),
    ),
    "nul_in_bundle": lambda r, d: (body(r, d, SEED_BUNDLE + "# \x00\n"), "request.invalid_text", bundle_path(r)),
    "surrogate_in_pipe_code": lambda r, d: (
        dumps({**body_for(r, dry=d), "pipe_code": "x\udfff"}),
        "request.invalid_text",
        ["body", "pipe_code"],
    ),
    "nul_in_pipe_code": lambda r, d: (dumps({**body_for(r, dry=d), "pipe_code": "x\x00"}), "request.invalid_text", ["body", "pipe_code"]),
    "surrogate_in_value": lambda r, d: (dumps(with_value(r, "a\ud800b", d)), "request.invalid_text", value_path(r)),
    "surrogate_in_key": lambda r, d: (dumps(with_value(r, {"\udc00": "x"}, d)), "request.invalid_text", [*value_path(r), "\\udc00"]),
    "utf8_encoded_surrogate": lambda r, d: (
        dumps(with_value(r, "MARK", d)).replace(b"MARK", b"\xed\xa0\x80"),
        "request.invalid_text",
        value_path(r),
    ),
    "not_utf8": lambda r, d: (dumps(with_value(r, "MARK", d)).replace(b"MARK", b"\xff\xfe"), "request.malformed", ["body"]),
    # JSON deeper than the decoder's recursion, deeper than our limit, numbers JSON does not have
    "json_100k_levels": lambda r, d: (
        dumps(with_value(r, "MARK", d)).replace(b'"MARK"', b"[" * 100_000 + b"]" * 100_000),
        "request.too_deeply_nested",
        ["body"],
    ),
    "json_past_limit": lambda r, d: (dumps(with_value(r, deep_list(MAX_JSON_DEPTH), d)), "request.too_deeply_nested", value_path(r)),
    "nan": lambda r, d: (dumps(with_value(r, [1.0, float("nan")], d)), "request.malformed", [*value_path(r), 1]),
    "infinity": lambda r, d: (dumps(with_value(r, {"v": float("-inf")}, d)), "request.malformed", [*value_path(r), "v"]),
    "1e400": lambda r, d: (dumps(with_value(r, "MARK", d)).replace(b'"MARK"', b"1e400"), "request.malformed", value_path(r)),
    "int_of_5000_digits": lambda r, d: (dumps(with_value(r, "MARK", d)).replace(b'"MARK"', b"1" * 5000), "request.malformed", ["body"]),
}
V1_CASES: dict[str, Case] = {
    "surrogate_in_file_name": lambda r, d: (
        dumps({**body_for(r, dry=d), "files": {"he\ud800.mthds": SEED_BUNDLE}}),
        "request.invalid_text",
        None,
    ),
    "nul_in_file_name": lambda r, d: (dumps({**body_for(r, dry=d), "files": {"he\x00.mthds": SEED_BUNDLE}}), "request.invalid_text", None),
    "nul_in_base64_file": lambda r, d: (
        dumps({**body_for(r, dry=d), "files": {FILE: {"base64": __import__("base64").b64encode(b"domain = 1\x00").decode()}}}),
        "request.invalid_text",
        ["body", "files", FILE],
    ),
    "deep_toml_in_base64_file": lambda r, d: (
        dumps(
            {
                **body_for(r, dry=d),
                "files": {FILE: {"base64": __import__("base64").b64encode(b"x = " + b"[" * DEEP + b"]" * DEEP).decode()}},
            }
        ),
        "request.too_deeply_nested",
        ["body", "files", FILE],
    ),
}


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()  # ASCII: surrogates and NUL travel as \u escapes, NaN as NaN


def body(route: str, dry: bool, bundle: str) -> bytes:
    return dumps(body_for(route, bundle, dry=dry))


def assert_problem(response: httpx.Response, code: str, route: str | None = None) -> dict:
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == code, problem
    assert problem["status"] == response.status_code and problem["request_id"]
    if route and route.startswith("v1."):  # what the protocol's clients require of every problem
        assert problem["domain"] and problem["retry"] and problem["next_step"]["kind"]
    return problem


async def assert_still_serving(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    normal = await client.post(ROUTES["api.execute"], json=seed_request(dry_run=True))
    assert normal.status_code == 200, normal.text


HOSTILE = [(case, route, dry) for case in CASES for route, dry in ROUTE_MODES] + [
    (case, route, dry) for case in V1_CASES for route, dry in ROUTE_MODES if route.startswith("v1.")
]


@pytest.mark.parametrize(("case", "route", "dry"), HOSTILE, ids=[f"{c}-{r}-{'dry' if d else 'live'}" for c, r, d in HOSTILE])
async def test_hostile_body_is_a_located_4xx_problem(client, stub, case, route, dry):
    content, code, path = (CASES | V1_CASES)[case](route, dry)
    response = await client.post(ROUTES[route], content=content, headers={"content-type": "application/json"})
    problem = assert_problem(response, code, route)
    if path is not None:  # the location names the value (a value past the depth limit: the path down to it)
        assert problem["location"]["path"][: len(path)] == path, problem
        assert case == "json_past_limit" or problem["location"]["path"] == path
    assert stub.stats()["total_calls"] == 0
    await assert_still_serving(client)


def concept_chain(length: int) -> str:
    """Valid TOML, a valid bundle, but each concept is a field of the one before: the runtime recurses per link."""
    parts = ['domain = "deep"\nmain_pipe = "make"\n']
    for i in range(length):
        parts.append(f'[concept.C{i}]\ndescription = "C{i}"\n[concept.C{i}.structure]\n')
        field = f'inner = {{ type = "concept", concept_ref = "deep.C{i + 1}", description = "x", required = true }}'
        parts.append((field if i + 1 < length else 'leaf = { type = "text", description = "x" }') + "\n")
    parts.append('[pipe.make]\ntype = "PipeLLM"\ndescription = "Make"\ninputs = { text = "Text" }\noutput = "C0"\nprompt = "From $text"\n')
    return "".join(parts)


@pytest.mark.parametrize(("route", "dry"), ROUTE_MODES, ids=[f"{route}-{'dry' if dry else 'live'}" for route, dry in ROUTE_MODES])
async def test_a_bundle_that_makes_the_runtime_recurse_is_refused_not_a_500(client, route, dry):
    response = await client.post(ROUTES[route], json=body_for(route, concept_chain(300), dry=dry, pipe_code="make"))
    if route.endswith("validate"):  # a parsable bundle gets a verdict
        assert response.status_code == 200, response.text
        verdict = response.json()
        assert verdict.get("success", verdict.get("is_valid")) is False
        assert verdict["errors"][0]["code"] == "request.too_deeply_nested"
    else:
        problem = assert_problem(response, "request.too_deeply_nested", route)
        if route in ("api.execute", "v1.execute"):
            run = (await client.get(f"/api/v1/runs/{problem['pipeline_run_id']}")).json()
            assert run["pipeline_state"] == "FAILED" and run["error"]["code"] == "request.too_deeply_nested"
    await assert_still_serving(client)


@pytest.mark.parametrize("route", ["api.execute", "build.output", "api.validate"])
async def test_an_integer_literal_too_long_to_read_is_a_bundle_error(client, route):
    bundle = SEED_BUNDLE + "x = 1" + "0" * 5000 + "\n"
    response = await client.post(ROUTES[route], json=body_for(route, bundle))
    if route == "api.validate":
        assert response.status_code == 200 and response.json()["errors"][0]["code"] == "method.syntax"
    else:
        assert assert_problem(response, "method.invalid")["errors"][0]["code"] == "method.syntax"
    await assert_still_serving(client)


async def test_values_at_the_limits_are_accepted(client):
    # the body is level 1, inputs 2, the input 3, its content 4: a list there may nest to the limit
    inputs = {"text": {"concept": "Text", "content": {"text": "x", "extra": deep_list(MAX_JSON_DEPTH - 4)}}}
    response = await client.post(ROUTES["api.execute"], json=seed_request(inputs=inputs, dry_run=True))
    assert response.status_code == 200, response.text
    # a bundle just under the TOML limit reaches the runtime, which gives its own verdict
    bundle = "x = " + "[" * (MAX_TOML_DEPTH - 1) + "]" * (MAX_TOML_DEPTH - 1) + "\n" + SEED_BUNDLE
    verdict = (await client.post(ROUTES["api.validate"], json={"mthds_contents": [bundle]})).json()
    assert verdict["success"] is False and verdict["errors"][0]["code"].startswith("method.")
    # a second file past the limit is named by its index
    response = await client.post(ROUTES["api.validate"], json={"mthds_contents": [SEED_BUNDLE, bundle.replace("x = ", "x = [[")]})
    assert assert_problem(response, "request.too_deeply_nested")["location"] == {"path": ["body", "mthds_contents", 1], "line": 1}


async def test_reserved_keys_are_still_refused_only_under_inputs(client):
    problem = assert_problem(
        await client.post(ROUTES["api.execute"], json=seed_request(inputs={"text": [{"__class__": "os"}]})), "input.reserved_key"
    )
    assert problem["location"]["path"] == ["body", "inputs", "text", 0, "__class__"]
    ok = await client.post("/v1/validate", json={"files": {FILE: SEED_BUNDLE}, "views": [], "__kajson_hint__": 1})
    assert ok.status_code == 200, ok.text


@pytest.mark.postgres
async def test_values_postgresql_cannot_store_never_reach_it(make_app, postgres_url):
    app = await make_app(database_url=postgres_url)
    bundle = bundles.STRUCTURED_BUNDLE
    for value in (float("nan"), float("inf"), "Ada\x00"):
        inputs = {"text": {"concept": "contacts.Person", "content": {"name": value, "age": value}}}
        body = {"mthds_contents": [bundle], "inputs": inputs, "dry_run": True}
        response = await app.client.post(ROUTES["api.start"], content=dumps(body), headers={"content-type": "application/json"})
        assert_problem(response, "request.invalid_text" if isinstance(value, str) else "request.malformed")
    await assert_still_serving(app.client)


# ---------------------------------------------------------------- the TOML nesting scanner


def scanned_depth(text: str) -> int:
    """The smallest limit the scanner accepts the text under (its bound on the document's nesting)."""
    limit = 1
    while toml_excess(text, limit) is not None:
        limit += 1
    return limit


def real_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((real_depth(item) for item in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((real_depth(item) for item in value), default=0)
    return 0


BRACKETS = "[[[[{{{{....[{" * 20  # 280 structural characters, none of which may count inside a string or comment


@pytest.mark.parametrize(
    "text",
    [
        f'a = "{BRACKETS}"\n',
        f'a = "esc \\" {BRACKETS} \\\\"\n',
        f"a = '{BRACKETS}'\n",
        f'a = """\n{BRACKETS} "" \\""" {BRACKETS}\n"""\n',
        f'a = """{BRACKETS}""""\n',  # ends with a quote that belongs to the content
        f'a = """{BRACKETS}"""""\n',
        f"a = '''\n{BRACKETS} '' {BRACKETS}\n'''\n",
        f"a = '''{BRACKETS}''''\n",
        f"# {BRACKETS}\na = 1 # {BRACKETS}\n",
        f'"{BRACKETS}" = 1\n["{BRACKETS}"]\nb = [ # {BRACKETS}\n  "{BRACKETS}", # {BRACKETS}\n]\n',
        f'a = "unclosed {BRACKETS}',  # a parser stops at the unclosed string: nothing after it is built
        f'a = """unclosed {BRACKETS}',
    ],
)
def test_brackets_in_strings_and_comments_do_not_count(text):
    assert toml_excess(text) is None


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("a = " + "[" * 150 + "]" * 150, 151),
        ('a = """x""""\nb = ' + "[" * 150 + "]" * 150, 151),  # a multi-line string's extra quote does not end the scan
        ("a = '''x''''\nb = " + "{c = " * 150 + "1" + "}" * 150, 151),
        ('a = "x\\"" # "\nb = ' + "[" * 150, 151),
        ("[" + ".".join("a" * 60) + "]", 61),  # a header counts two levels per segment (an array of tables holds tables)
        ('[["a.b".' + ".".join("c" * 60) + "]]", 63),
        (".".join("a" * 150) + " = 1", 150),
        ("x = { " + " = { ".join(f"k{i}.a.b" for i in range(40)) + " = 1" + " }" * 40, 121),  # dotted keys inside inline tables
        ("3.14 = 1\n" + "a = [" + "1.5, " * 200 + "]", 2),  # a dotted key counts, the dots of values never do
    ],
)
def test_the_scanner_bounds_each_way_of_nesting(text, depth):
    with contextlib.suppress(tomllib.TOMLDecodeError):
        assert real_depth(tomllib.loads(text)) == depth  # the depth a parser builds
    assert depth <= scanned_depth(text) <= 2 * depth + 2


def test_real_bundles_are_far_under_the_limit():
    for name in dir(bundles):
        text = getattr(bundles, name)
        if name.endswith("BUNDLE") and isinstance(text, str):
            assert scanned_depth(text) <= 12, name


KEYS = st.from_regex(r"[a-z]{1,3}", fullmatch=True) | st.sampled_from(['"a.b"', '"[x]"', "'{y}'", '"q\\"["'])
SCALARS = st.sampled_from(['"s[{"', "'l]}'", "1.5", "true", '"""m\n[x]"""', "'''n\n{'''", "2024-01-01"])


@st.composite
def toml_documents(draw, depth: int = 0) -> str:
    """Random valid-looking TOML: headers, arrays of tables, dotted keys, inline tables and arrays, comments."""
    lines = []
    for index in range(draw(st.integers(1, 3))):  # each statement's first key is its own: no duplicate keys
        key = ".".join([f"k{index}", *draw(st.lists(KEYS, max_size=3))])
        lines.append(f"{key} = {draw(values(depth))} # [{{ \"'.")
    for index in range(draw(st.integers(0, 2))):
        opener, closer = draw(st.sampled_from([("[", "]"), ("[[", "]]")]))
        header = ".".join([f"t{index}", *draw(st.lists(KEYS, max_size=4))])
        lines.append(f"{opener}{header}{closer}")
        lines.append(f"{draw(KEYS)} = {draw(values(depth))}")
    return "\n".join(lines) + "\n"


def values(depth: int) -> st.SearchStrategy[str]:
    if depth > 6:
        return SCALARS
    inner = st.deferred(lambda: values(depth + 1))
    arrays = st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
    tables = st.lists(st.tuples(KEYS, inner), max_size=3, unique_by=lambda kv: kv[0]).map(
        lambda pairs: "{" + ", ".join(f"{key} = {value}" for key, value in pairs) + "}"
    )
    return SCALARS | arrays | tables


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(toml_documents())
def test_the_scanner_never_undercounts_what_a_parser_builds(text):
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return  # duplicate keys and the like: not what this test is about
    depth = real_depth(document)
    assert scanned_depth(text) >= depth, text


# ---------------------------------------------------------------- a real server process


@pytest.mark.slow
def test_a_real_server_survives_the_worst_bodies(tmp_path, stub):
    worst = [
        dumps(body_for("api.validate", "x = " + "[" * DEEP + "]" * DEEP)),
        dumps(body_for("v1.execute", "x = " + "{a = " * DEEP + "1" + "}" * DEEP)),
        dumps(with_value("api.execute", "MARK", True)).replace(b'"MARK"', b"[" * 100_000 + b"]" * 100_000),
        dumps(with_value("v1.start", {"k\ud800": "\udfff"}, False)),
        dumps(body_for("build.output", SEED_BUNDLE.replace("Summarize the", "\ud800"))),
        dumps(with_value("api.start", float("nan"), False)),
    ]
    env = {"OPENAI_BASE_URL": stub.base_url}
    with ServerProcess(tmp_path, env=env) as server, server.client() as http:
        for content, route in zip(
            worst, ["api.validate", "v1.execute", "api.execute", "v1.start", "build.output", "api.start"], strict=True
        ):
            response = http.post(ROUTES[route], content=content, headers={"content-type": "application/json"})
            assert response.status_code == 422, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert http.get("/health").status_code == 200
        assert http.post(ROUTES["api.execute"], json=seed_request(dry_run=True)).status_code == 200
        assert server.process is not None and server.process.poll() is None
    assert "Traceback" not in server.log()
