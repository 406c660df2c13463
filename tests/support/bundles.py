"""MTHDS bundles the tests run, and the method packages under tests/support/methods."""

from pathlib import Path

METHODS_DIR = Path(__file__).resolve().parent / "methods"

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


def package_files(name: str) -> dict[str, str]:
    """A fixture package of tests/support/methods as a `files` map of inline text entries, in tree path order."""
    root = METHODS_DIR / name
    return {path.relative_to(root).as_posix(): path.read_text() for path in sorted(root.rglob("*")) if path.is_file()}


def seed_request(**extra: object) -> dict[str, object]:
    return {"pipe_code": "summarize", "mthds_contents": [SEED_BUNDLE], "inputs": {"text": SEED_TEXT}, **extra}


def main_content(body: dict) -> object:
    """The main result, where the contract says it is."""
    return body["pipe_output"]["working_memory"]["root"][body["main_stuff_name"]]["content"]


STRUCTURED_BUNDLE = """domain = "contacts"
main_pipe = "extract_person"

[concept.Person]
description = "A person mentioned in a text"

[concept.Person.structure]
name = { type = "text", description = "Full name", required = true }
age = { type = "integer", description = "Age in years", required = true }
email = { type = "text", description = "Email address", required = false }

[pipe.extract_person]
type = "PipeLLM"
description = "Extract the person the text is about"
inputs = { text = "Text" }
output = "Person"
prompt = "Extract the person from this text:\\n@text"
"""

SEQUENCE_BUNDLE = """domain = "menus"
main_pipe = "write_card"

[concept]
KitchenNote = "What the kitchen has in today"
MenuCard = "The menu written out for the dining room"

[pipe.write_card]
type = "PipeSequence"
description = "From the kitchen note to a dish list, a draft and a final card"
inputs = { note = "KitchenNote" }
output = "MenuCard"
steps = [
  { pipe = "list_dishes", result = "dishes" },
  { pipe = "draft_card", result = "draft" },
  { pipe = "polish_card", result = "card" },
]

[pipe.list_dishes]
type = "PipeLLM"
description = "Step one: dishes"
inputs = { note = "KitchenNote" }
output = "Text"
prompt = "STEP1 list dishes from: $note"

[pipe.draft_card]
type = "PipeLLM"
description = "Step two: draft"
inputs = { dishes = "Text" }
output = "Text"
prompt = "STEP2 draft a card for: $dishes"

[pipe.polish_card]
type = "PipeLLM"
description = "Step three: polish"
inputs = { draft = "Text" }
output = "MenuCard"
prompt = "STEP3 polish: $draft"
"""

PARALLEL_BUNDLE = """domain = "weather"
main_pipe = "read_observation"

[pipe.read_observation]
type = "PipeParallel"
description = "Summarize and title an observation side by side"
inputs = { observation = "Text" }
output = "Composite"
add_each_output = true
branches = [
  { pipe = "summarize_observation", result = "summary" },
  { pipe = "title_observation", result = "title" },
]

[pipe.summarize_observation]
type = "PipeLLM"
description = "Summary"
inputs = { observation = "Text" }
output = "Text"
prompt = "BRANCH-A summarize: $observation"

[pipe.title_observation]
type = "PipeLLM"
description = "Title"
inputs = { observation = "Text" }
output = "Text"
prompt = "BRANCH-B title: $observation"
"""

BATCH_BUNDLE = """domain = "labels"
main_pipe = "label_all"

[concept]
Crate = "A crate described by its contents"
Label = "The text stuck on a crate"

[pipe.label_all]
type = "PipeBatch"
description = "One label per crate"
inputs = { crates = "Crate[]" }
output = "Label[]"
branch_pipe_code = "label_one"
input_list_name = "crates"
input_item_name = "crate"

[pipe.label_one]
type = "PipeLLM"
description = "Label one crate"
inputs = { crate = "Crate" }
output = "Label"
prompt = "Label this crate: $crate"
"""

CONDITION_BUNDLE = """domain = "parcels"
main_pipe = "route"

[concept.Parcel]
description = "A parcel at the belt"

[concept.Parcel.structure]
size = { type = "text", description = "small or large", required = true }
address = { type = "text", description = "Destination", required = true }

[pipe.route]
type = "PipeCondition"
description = "Route by size"
inputs = { parcel = "Parcel" }
output = "Text"
expression = "parcel.size"
default_outcome = "fail"

[pipe.route.outcomes]
small = "small_belt"
large = "large_belt"

[pipe.small_belt]
type = "PipeLLM"
description = "Small belt"
inputs = { parcel = "Parcel" }
output = "Text"
prompt = "SMALL-BELT for $parcel.address"

[pipe.large_belt]
type = "PipeLLM"
description = "Large belt"
inputs = { parcel = "Parcel" }
output = "Text"
prompt = "LARGE-BELT for $parcel.address"
"""


def unique_bundle(index: int) -> str:
    """A distinct one-pipe bundle whose answer echoes its own token (the stub echoes TOKEN-... it sees)."""
    return f"""domain = "iso{index}"
main_pipe = "answer"

[concept.Result]
description = "Result {index}"

[concept.Result.structure]
value = {{ type = "text", description = "The value", required = true }}

[pipe.answer]
type = "PipeLLM"
description = "Answer for run {index}"
inputs = {{ text = "Text" }}
output = "Result"
prompt = "Answer TOKEN-r{index} about:\\n@text"
"""
