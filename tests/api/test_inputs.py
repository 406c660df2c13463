"""Every input shape of contract §5 that needs no remote fetch."""

import pytest

EXECUTE = "/api/v1/pipeline/execute"

PEOPLE = """domain = "people"
main_pipe = "describe"

[concept.Person]
description = "A person"

[concept.Person.structure]
name = { type = "text", description = "Name", required = true }
age = { type = "integer", description = "Age", required = true }

[concept]
Note = "A free-form note"

[pipe.describe]
type = "PipeLLM"
description = "Describe the input"
inputs = { subject = "{spec}" }
output = "Text"
prompt = \"\"\"
Describe:
@subject
\"\"\"
"""


def bundle(spec: str) -> str:
    return PEOPLE.replace("{spec}", spec)


CASES = [
    ("plain string as Text", "Text", "just text", "native.Text", lambda c: c["text"] == "just text"),
    (
        "list of strings as Text[]",
        "Text[]",
        ["one", "two"],
        "native.Text",
        lambda c: [item["text"] for item in c["items"]] == ["one", "two"],
    ),
    ("explicit concept, string content", "Note", {"concept": "Note", "content": "a note"}, "people.Note", lambda c: c["text"] == "a note"),
    (
        "explicit concept, list of strings",
        "Note[]",
        {"concept": "Note", "content": ["n1", "n2"]},
        "people.Note",
        lambda c: [item["text"] for item in c["items"]] == ["n1", "n2"],
    ),
    (
        "explicit concept, object",
        "Person",
        {"concept": "Person", "content": {"name": "Ada", "age": 36}},
        "people.Person",
        lambda c: c == {"name": "Ada", "age": 36},
    ),
    (
        "explicit concept, list of objects",
        "Person[]",
        {"concept": "Person", "content": [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}]},
        "people.Person",
        lambda c: [item["name"] for item in c["items"]] == ["Ada", "Alan"],
    ),
    (
        "bare object for a structured concept",
        "Person",
        {"name": "Grace", "age": 85},
        "people.Person",
        lambda c: c == {"name": "Grace", "age": 85},
    ),
]


@pytest.mark.parametrize(("label", "spec", "value", "concept", "check"), CASES, ids=[case[0] for case in CASES])
async def test_input_shape_is_accepted_and_reaches_the_pipe(client, stub, label, spec, value, concept, check):
    response = await client.post(EXECUTE, json={"mthds_contents": [bundle(spec)], "inputs": {"subject": value}})
    assert response.status_code == 200, response.text
    subject = response.json()["pipe_output"]["working_memory"]["root"]["subject"]
    assert subject["concept"] == concept
    assert check(subject["content"]), subject["content"]
    assert stub.stats()["total_calls"] == 1
