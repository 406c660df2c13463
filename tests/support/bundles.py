"""MTHDS bundles the tests run."""

SEED_BUNDLE = """domain = "hello"
main_pipe = "summarize"

[pipe.summarize]
type = "PipeLLM"
description = "Summarize the input text in one sentence"
inputs = { text = "Text" }
output = "Text"
prompt = "Summarize in one sentence:\\n@text"
"""

SEED_TEXT = "Pipelex turns plain-language pipeline definitions into reproducible AI workflows that run as HTTP endpoints."


def seed_request(**extra: object) -> dict[str, object]:
    return {"pipe_code": "summarize", "mthds_contents": [SEED_BUNDLE], "inputs": {"text": SEED_TEXT}, **extra}


def main_content(body: dict) -> object:
    """The main result, where the contract says it is."""
    return body["pipe_output"]["working_memory"]["root"][body["main_stuff_name"]]["content"]
