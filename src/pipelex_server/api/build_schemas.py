"""Request and response models of the build helpers (/api/v1/build/*)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelex_server.api.body_guard import GuardedBody
from pipelex_server.api.schemas import FILES_DESCRIPTION, MethodSourceFields

_SEED = (
    'domain = "hello"\nmain_pipe = "summarize"\n\n[pipe.summarize]\ntype = "PipeLLM"\n'
    'description = "Summarize the input text in one sentence"\ninputs = { text = "Text" }\n'
    'output = "Text"\nprompt = "Summarize in one sentence:\\n@text"\n'
)

MthdsContents = Annotated[
    list[Annotated[str, Field(max_length=4 * 1024 * 1024)]] | None,
    Field(
        min_length=1,
        max_length=64,
        description="Raw .mthds (TOML) file contents; always a list. Or send the method as files or bundle_b64, as on the run routes.",
    ),
]
PipeCode = Annotated[
    str | None,
    Field(min_length=1, max_length=512, description="Pipe to build for (bare or domain-qualified); defaults to the bundle's main_pipe."),
]


class BuildInputsRequest(GuardedBody, MethodSourceFields):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"mthds_contents": [_SEED], "format": "json"}]})

    mthds_contents: MthdsContents = None
    files: dict[str, Any] | None = Field(default=None, description=FILES_DESCRIPTION)
    pipe_code: PipeCode = None
    format: Literal["json", "toml"] = Field(description="json: an object usable as-is as `inputs`; toml: the same as TOML text.")


class BuildInputsResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "pipe_code": "hello.summarize",
                    "format": "json",
                    "inputs_template": {"text": "text_value"},
                    "success": True,
                    "message": "Inputs template for pipe 'hello.summarize': 1 input(s) with placeholder values.",
                }
            ]
        }
    )

    pipe_code: str = Field(description="The pipe the template is for, domain-qualified.")
    format: Literal["json", "toml"]
    inputs_template: dict[str, Any] | str = Field(
        description=(
            "json: an object keyed by input name, with placeholder values shaped as /api/v1/pipeline/execute accepts them "
            "(text as a string, a structured concept as its fields, a list input as a list); send it as `inputs`. "
            "toml: the same template as TOML text, each input preceded by a `# concept: ...` comment. "
            "A pipe without inputs gives {} (json) or an empty string (toml)."
        )
    )
    success: bool = Field(description="Always true on a 200; failures are problem documents.")
    message: str


class BuildOutputRequest(GuardedBody, MethodSourceFields):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"mthds_contents": [_SEED], "format": "schema"}]})

    mthds_contents: MthdsContents = None
    files: dict[str, Any] | None = Field(default=None, description=FILES_DESCRIPTION)
    pipe_code: PipeCode = None
    format: Literal["schema", "json", "python"] = Field(
        description="schema: JSON Schema; json: an example instance valid against it; python: pydantic classes (source code)."
    )


class BuildOutputResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "pipe_code": "hello.summarize",
                    "format": "json",
                    "concept_code": "native.Text",
                    "multiplicity": "single",
                    "item_count": None,
                    "output": {"text": "text_value"},
                    "python_class": None,
                    "success": True,
                    "message": "Example of the output of pipe 'hello.summarize' (native.Text, single).",
                }
            ]
        }
    )

    pipe_code: str = Field(description="The pipe the output is of, domain-qualified.")
    format: Literal["schema", "json", "python"]
    concept_code: str = Field(description="The output's concept, domain-qualified (e.g. native.Text).")
    multiplicity: Literal["single", "variable", "fixed"] = Field(
        description='single: one item; variable (Concept[]) or fixed (Concept[N]): a list, returned as {"items": [...]}.'
    )
    item_count: int | None = Field(description="N for a fixed multiplicity, else null.")
    output: Any = Field(
        description=(
            "All three describe the main result's `content` as /api/v1/pipeline/execute returns it "
            "(pipe_output.working_memory.root[main_stuff_name].content). "
            "schema: a JSON Schema object; json: an example instance, valid against that schema; "
            "python: the source of a module of pydantic models (one per concept of the bundle), where the class "
            "named by `python_class` validates the content."
        )
    )
    python_class: str | None = Field(description="python: the class in `output` that models the output's content; else null.")
    success: bool = Field(description="Always true on a 200; failures are problem documents.")
    message: str


class BuildRunnerRequest(GuardedBody, MethodSourceFields):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"mthds_contents": [_SEED], "target": "http"}]})

    mthds_contents: MthdsContents = None
    files: dict[str, Any] | None = Field(default=None, description=FILES_DESCRIPTION)
    pipe_code: PipeCode = None
    target: Literal["http", "pipelex"] = Field(
        description=(
            "http: a script that posts to this server's /api/v1/pipeline/execute with httpx (PIPELEX_SERVER_URL, "
            "PIPELEX_SERVER_TOKEN); pipelex: a script that runs the pipe locally with the pipelex library."
        )
    )


class BuildRunnerResponse(BaseModel):
    python_code: str = Field(
        description=(
            "A ready-to-run Python script that embeds the bundle and an inputs template (placeholder values to replace), "
            "runs the pipe and prints its main result; both targets take --dry-run."
        )
    )
    pipe_code: str = Field(description="The pipe the script runs, domain-qualified.")
    success: bool = Field(description="Always true on a 200; failures are problem documents.")
    message: str
