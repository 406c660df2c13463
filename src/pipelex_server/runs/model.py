"""The run's value types: who asks (``Caller``), what is asked (``RunRequest``), and which failures are retried."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelex_server.engine.method_tree_files import MethodTreeFiles

# A run's own time limit is final, whatever the failure inside it.
NOT_RETRYABLE_CODES = frozenset({"run.timed_out"})


class RetryableRunFailure(Exception):
    """The run failed in a way another attempt may fix; the run stays RUNNING (Temporal retries the activity)."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(f"{problem.get('code')}: {problem.get('detail')}")
        self.problem = problem


def is_retryable(problem: dict[str, Any] | None) -> bool:
    """Worth another attempt (Temporal mode): the runtime's registry says so (``retry: yes``: rate limits, provider
    outages and 5xx, provider timeouts); input, bundle and provider-refusal (4xx) failures are final."""
    if not problem:
        return False
    return problem.get("retry") == "yes" and str(problem.get("code") or "") not in NOT_RETRYABLE_CODES


@dataclass(frozen=True)
class Caller:
    """Who is asking. ``scope`` is the tenant segment used for runs, storage and the runtime's read scope."""

    id: str

    @property
    def scope(self) -> str:
        return self.id


@dataclass(frozen=True)
class RunRequest:
    """The pipeline part of an execute/start body, as plain JSON.

    A method tree travels as ``tree`` (tree path -> SHA-256 of the file, the files kept as the caller's blobs) and
    ``tree_digest``; ``tree_files`` holds its bytes while the request is in hand, and is never stored: a run executed
    elsewhere (a requeued run, a Temporal worker) reads the files back from the blobs."""

    pipe_code: str | None
    mthds_contents: list[str] | None
    inputs: dict[str, Any] | None
    output_name: str | None
    output_multiplicity: Any
    dynamic_output_concept_ref: str | None
    dry_run: bool
    callback_urls: list[str]
    tree: dict[str, str] | None = None
    tree_digest: str | None = None
    tree_dependencies: dict[str, dict[str, str]] | None = None  # address -> tree path -> SHA-256, kept like ``tree``
    tree_files: MethodTreeFiles | None = field(default=None, compare=False, repr=False)
    method_provenance: dict[str, Any] | None = None  # a method_ref's address, tag, commit, tree digest, display name
    method_id: str | None = None  # the catalog method run by `method_id` (its bare id), recorded on the run
    method_version: str | None = None  # which version of it ran: "3" or "draft"

    def to_json(self) -> dict[str, Any]:
        document = {
            "pipe_code": self.pipe_code,
            "mthds_contents": self.mthds_contents,
            "inputs": self.inputs,
            "output_name": self.output_name,
            "output_multiplicity": self.output_multiplicity,
            "dynamic_output_concept_ref": self.dynamic_output_concept_ref,
            "dry_run": self.dry_run,
            "callback_urls": self.callback_urls,
        }
        if self.tree is not None:  # absent otherwise, so the fingerprint of a request without a tree is unchanged
            document["tree"] = self.tree
            document["tree_digest"] = self.tree_digest
            if self.tree_dependencies:
                document["tree_dependencies"] = self.tree_dependencies
        if self.method_provenance is not None:
            document["method_provenance"] = self.method_provenance
        if self.method_id is not None:  # absent otherwise, so the fingerprint of other requests is unchanged
            document["method_id"] = self.method_id
            document["method_version"] = self.method_version
        return document

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunRequest:
        return cls(
            pipe_code=data.get("pipe_code"),
            mthds_contents=data.get("mthds_contents"),
            inputs=data.get("inputs"),
            output_name=data.get("output_name"),
            output_multiplicity=data.get("output_multiplicity"),
            dynamic_output_concept_ref=data.get("dynamic_output_concept_ref"),
            dry_run=bool(data.get("dry_run")),
            callback_urls=list(data.get("callback_urls") or []),
            tree=data.get("tree"),
            tree_digest=data.get("tree_digest"),
            tree_dependencies=data.get("tree_dependencies"),
            method_provenance=data.get("method_provenance"),
            method_id=data.get("method_id"),
            method_version=data.get("method_version"),
        )

    def fingerprint(self) -> str:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def with_rewritten_urls(self, rewrites: dict[str, str]) -> RunRequest:
        """The same request with the inputs' remote and data: URLs replaced by the storage URIs they were stored at."""
        if not rewrites:
            return self
        return replace(self, inputs=rewrite_urls(self.inputs, rewrites))

    def engine_arguments(self) -> dict[str, Any]:
        """What the engine needs to run it: everything but the callbacks, which are the run service's, and the tree,
        which the caller hands over as files (``tree_files``, or read back from the blobs)."""
        arguments = self.to_json()
        for name in ("callback_urls", "tree", "tree_digest", "tree_dependencies", "method_provenance", "method_id", "method_version"):
            arguments.pop(name, None)
        return arguments


def rewrite_urls(value: Any, rewrites: dict[str, str]) -> Any:
    """The JSON inputs with every ``"url"`` the resolution stored replaced by its storage URI."""
    if not rewrites:
        return value
    if isinstance(value, dict):
        return {
            key: (rewrites.get(item, item) if key == "url" and isinstance(item, str) else rewrite_urls(item, rewrites))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [rewrite_urls(item, rewrites) for item in value]
    return value
