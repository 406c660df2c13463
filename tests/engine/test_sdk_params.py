"""The skipped parameter transform answers as the OpenAI SDK's own walk, and leaves to it everything it could change:
aliased keys, formatted dates, files, pydantic models, iterables, omitted values below the top. Fails loudly if the
pinned SDK changes shape."""

from __future__ import annotations

import datetime
import importlib
import inspect
from collections.abc import Iterable
from typing import Annotated, Literal, Required, TypedDict

import pytest
from openai import NOT_GIVEN, omit
from openai._utils import _transform as transform
from openai.types.beta import response_create_params as beta_params
from openai.types.chat import completion_create_params
from openai.types.responses import response_create_params

from pipelex_server.engine.sdk_params import MODULES, install_plain_params, plain_params


class Part(TypedDict, total=False):
    type: Required[Literal["input_text"]]
    text: Required[str]


class Aliased(TypedDict, total=False):
    card_id: Annotated[str, transform.PropertyInfo(alias="cardID")]


class Dated(TypedDict, total=False):
    when: Annotated[str | datetime.date, transform.PropertyInfo(format="iso8601")]
    parts: Iterable[Part]


class Nested(TypedDict, total=False):
    inner: Part | Aliased


class Tree(TypedDict, total=False):  # recursive, with an alias reachable only through its other half
    branch: Branch
    label: str


class Branch(TypedDict, total=False):
    tree: Tree
    leaf: Aliased


INPUT = [{"role": "user", "content": [{"type": "input_text", "text": "Summarize in one sentence:\n<text>x</text>"}]}]
CASES = [
    # (params, declared type): what pipelex's OpenAI workers send, then what only the SDK's walk may touch
    (
        {"model": "gpt-4o-mini", "input": INPUT, "temperature": 0.5, "instructions": None, "background": omit, "reasoning": NOT_GIVEN},
        response_create_params.ResponseCreateParamsNonStreaming,
    ),
    (
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": omit},
        completion_create_params.CompletionCreateParamsNonStreaming,
    ),
    ({"card_id": "c1"}, Aliased),
    ({"inner": {"card_id": "c1"}}, Nested),
    ({"when": datetime.date(2026, 12, 5)}, Dated),
    ({"when": "2026-12-05", "parts": ({"type": "input_text", "text": "t"},)}, Dated),
    ({"parts": [{"type": "input_text", "text": "t", "extra": omit}]}, Dated),
    (
        {"model": "m", "input": [{"role": "user", "content": "x"}], "betas": ["responses_multi_agent=v1"]},
        beta_params.ResponseCreateParamsBase,
    ),
]


@pytest.mark.parametrize(("params", "declared"), CASES)
async def test_the_answer_is_the_sdks(params, declared) -> None:
    assert (plain_params(params, declared) or await transform.async_maybe_transform(params, declared)) == (
        await transform.async_maybe_transform(params, declared)
    )


def test_pipelexs_parameters_skip_the_walk_and_only_the_omitted_go() -> None:
    params, declared = CASES[0]
    assert plain_params(params, declared) == {"model": "gpt-4o-mini", "input": INPUT, "temperature": 0.5, "instructions": None}


@pytest.mark.parametrize(
    ("params", "declared"),
    [
        ({"card_id": "c1"}, Aliased),  # a renamed key
        ({"inner": {"card_id": "c1"}}, Nested),  # a renamed key below a union
        ({"model": "m", "input": "x", "betas": ["responses_multi_agent=v1"]}, beta_params.ResponseCreateParamsBase),
        ({"when": datetime.date(2026, 12, 5)}, Dated),  # a date to format
        ({"parts": ({"type": "input_text", "text": "t"},)}, Dated),  # an iterable to list
        ({"parts": [{"type": "input_text", "text": "t", "extra": omit}]}, Dated),  # an omitted value below the top
        ({"tree": {"label": "t"}}, Branch),  # recursive types: an alias reachable through the cycle
        ({"branch": {"tree": {}}}, Tree),
        (["not", "a", "mapping"], Dated),
        ({"text": "t"}, str),  # not a typed dict
    ],
)
def test_what_the_walk_may_change_is_left_to_it(params, declared) -> None:
    assert plain_params(params, declared) is None


def test_the_pinned_sdk_calls_the_transform_the_patch_replaces() -> None:
    for name in MODULES:
        importlib.import_module(name)  # what pipelex's OpenAI workers import before the patch is installed
    install_plain_params()
    install_plain_params()  # idempotent
    for name in MODULES:
        module = importlib.import_module(name)
        assert getattr(module.async_maybe_transform, "_pipelex_server_plain_params", False)
    responses = importlib.import_module(MODULES[0])
    assert "async_maybe_transform(" in inspect.getsource(responses.AsyncResponses.create)
    assert "async_maybe_transform(" in inspect.getsource(importlib.import_module(MODULES[1]).AsyncCompletions.create)
    # what the skip relies on: the walk's helpers, the alias it renames by, omitted values as the SDK marks them
    assert {"alias", "format"} <= set(inspect.signature(transform.PropertyInfo).parameters)
    assert transform.is_given(omit) is False and transform.is_given(NOT_GIVEN) is False and transform.is_given(None) is True
    assert transform.is_typeddict(response_create_params.ResponseCreateParamsNonStreaming)
    assert transform.get_type_hints(Aliased, include_extras=True)["card_id"].__metadata__[0].alias == "cardID"


async def test_a_patched_call_sends_what_the_sdk_would() -> None:
    importlib.import_module(MODULES[0])
    install_plain_params()
    responses = importlib.import_module(MODULES[0])
    params, declared = CASES[0]
    assert await responses.async_maybe_transform(params, declared) == await transform.async_maybe_transform(params, declared)
    assert await responses.async_maybe_transform({"card_id": "c1"}, Aliased) == {"cardID": "c1"}
