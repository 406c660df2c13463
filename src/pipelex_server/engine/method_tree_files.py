"""Reading a method tree a request sends as `files` (tree path -> file entry) into its files' bytes, or refusing it.

The map is read with the MTHDS standard's own reader (`mthds.method_tree.file_entry.read_file_map`), from the JSON
text the request carried, so a key given twice is seen. In order: the tree limits are checked on the sizes the entries
state, before any entry is decoded or any blob read; hash entries are read from the caller's blobs; the standard's
refusals become 4xx problems (the official server's codes); a `.py` file is refused; a `METHODS.toml` must parse.
Loads no runtime: `mthds` only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Any

from pipelex_server.blobs import BlobCorrupted, BlobStore, is_sha256
from pipelex_server.errors import ApiProblem

FILES_FIELD = "files"
PYTHON_SUFFIX = ".py"
MAX_SHOWN_NAME = 200  # a name echoed back in a problem is cut to this many characters


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as the pairs it was written with, a key given twice kept twice."""


def _parse_pairs(text: str | bytes) -> Any:
    return json.loads(text, object_pairs_hook=_Pairs)


def _dumps(value: Any) -> str:
    """JSON text of a value parsed keeping pairs, written back as parsed (duplicates and number forms kept)."""
    if isinstance(value, _Pairs):
        return "{" + ",".join(f"{json.dumps(key)}:{_dumps(member)}" for key, member in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dumps(item) for item in value) + "]"
    return json.dumps(value)


def files_document(body: bytes) -> str | None:
    """The `files` member of a JSON request body as JSON text, pairs kept; None when absent or null. The body was
    already parsed and guarded by the route, so a body that does not parse here has no `files` to read."""
    try:
        parsed = _parse_pairs(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, _Pairs):
        return None
    member = dict(parsed).get(FILES_FIELD)
    return None if member is None else _dumps(member)


def object_member_documents(body: bytes, name: str) -> list[tuple[str, str]] | None:
    """The members of the object a JSON body holds under ``name`` (key, JSON text), pairs kept (a key given twice is
    seen twice); None when absent or null. Raises ``ValueError`` when the member is not an object."""
    try:
        parsed = _parse_pairs(body)
    except (ValueError, RecursionError):
        return None
    member = dict(parsed).get(name) if isinstance(parsed, _Pairs) else None
    if member is None:
        return None
    if not isinstance(member, _Pairs):
        raise ValueError(f"{name} must be a JSON object")
    return [(key, _dumps(value)) for key, value in member]


@dataclass(frozen=True)
class TreeLimits:
    max_files: int
    max_file_bytes: int
    max_total_bytes: int

    def announced(self) -> dict[str, int]:
        """As `/v1/version` announces them under `limits.method_tree` (the SDK's lister reads these names)."""
        return {"max_files": self.max_files, "max_file_bytes": self.max_file_bytes, "max_total_bytes": self.max_total_bytes}


@dataclass(frozen=True)
class MethodTreeFiles:
    """A method tree read in full: each file's bytes by tree path, its digest, and each file's SHA-256; with the
    dependency trees it carries (address -> tree), written beside it as the runtime's ``methods_dirs``."""

    contents: dict[str, bytes] = field(repr=False)
    digest: str
    hashes: dict[str, str]
    dependencies: dict[str, MethodTreeFiles] = field(default_factory=dict, repr=False)

    def all_contents(self) -> list[bytes]:
        """Every file's bytes, the dependency trees' included (what storing the method keeps as blobs)."""
        return [*self.contents.values(), *(data for tree in self.dependencies.values() for data in tree.contents.values())]

    def dependency_hashes(self) -> dict[str, dict[str, str]] | None:
        """Each dependency tree as tree path -> SHA-256, by address; None when it carries none."""
        return {address: tree.hashes for address, tree in self.dependencies.items()} or None

    def bundle_texts(self) -> list[str]:
        """The text of each `.mthds` bundle, in tree path order (a bundle that is not UTF-8 never loads)."""
        return [self.contents[path].decode("utf-8", "replace") for path in sorted(self.contents) if path.endswith(".mthds")]

    @classmethod
    def of(cls, contents: dict[str, bytes]) -> MethodTreeFiles:
        from mthds.method_tree.digest import tree_digest, tree_files_from_contents

        files = tree_files_from_contents(contents)
        return cls(contents=dict(contents), digest=tree_digest(files), hashes={item.path: item.sha256 for item in files})


def shown(name: str) -> str:
    """A name as a problem may echo it: short, and writable as JSON (a lone surrogate escaped)."""
    name = name.encode("utf-8", "backslashreplace").decode("utf-8")
    return name if len(name) <= MAX_SHOWN_NAME else name[:MAX_SHOWN_NAME] + "..."


def package_invalid(detail: str, *, reason: str, path: str | None = None, limit: int | None = None, field: str = FILES_FIELD) -> ApiProblem:
    params: dict[str, Any] = {"reason": reason, **_field_param(field)}
    if path is not None:
        params["path"] = shown(path)
    if limit is not None:
        params["limit"] = limit
    location = {"path": ["body", field, shown(path)]} if path is not None else {"path": ["body", field]}
    return ApiProblem(status=422, code="method.package_invalid", detail=detail, params=params, location=location)


def _field_param(field: str) -> dict[str, str]:
    """A problem about a map other than `files` also names its field in ``params`` (`files` problems keep their shape)."""
    return {} if field == FILES_FIELD else {"field": field}


def _invalid_request(detail: str, field: str = FILES_FIELD) -> ApiProblem:
    return ApiProblem(status=422, code="request.invalid", detail=detail, params={"field": field}, location={"path": ["body", field]})


def label_of(field: str) -> str:
    """How a refusal names the map it reads: "The `files` map", "The `bundle_b64` archive", ..."""
    return "The `bundle_b64` archive" if field == "bundle_b64" else f"The `{field}` map"


def _stated_size(entry: Any) -> tuple[int, str | None]:
    """The size an entry states (and the hash it names); 0 for an entry the standard's reader will refuse."""
    if isinstance(entry, str):
        return len(entry.encode("utf-8", "surrogatepass")), None
    if not isinstance(entry, _Pairs):
        return 0, None
    members = dict(entry)
    encoded = members.get("base64")
    if isinstance(encoded, str) and len(entry) == 1:
        return max(0, len(encoded) * 3 // 4 - encoded[-2:].count("=")), None
    sha256, size = members.get("sha256"), members.get("size")
    if isinstance(sha256, str) and is_sha256(sha256) and type(size) is int and size >= 0:
        return size, sha256
    return 0, None


def check_stated_limits(document: str, limits: TreeLimits, *, field: str = FILES_FIELD, label: str | None = None) -> dict[str, int]:
    """Refuse a map past a tree limit on what its entries state, decoding nothing; returns hash -> stated size."""
    try:
        parsed = _parse_pairs(document)
    except (ValueError, RecursionError):
        return {}  # the reader refuses it
    if not isinstance(parsed, _Pairs):
        return {}
    label = label or label_of(field)
    if len(parsed) > limits.max_files:
        raise package_invalid(
            f"{label} holds {len(parsed)} files, past this server's limit of {limits.max_files} files in a method "
            "tree (MAX_METHOD_TREE_FILES).",
            reason="too_many_files",
            limit=limits.max_files,
            field=field,
        )
    total, hashed = 0, {}
    for tree_path, entry in parsed:
        size, sha256 = _stated_size(entry)
        if size > limits.max_file_bytes:
            raise package_invalid(
                f"{label} holds the file {shown(tree_path)!r} of {size} bytes, past this server's limit of "
                f"{limits.max_file_bytes // 1024} KiB for one file of a method tree (MAX_METHOD_TREE_FILE_KIB).",
                reason="file_too_large",
                path=tree_path,
                limit=limits.max_file_bytes,
                field=field,
            )
        total += size
        if sha256 is not None:
            hashed[sha256] = size
    if total > limits.max_total_bytes:
        raise package_invalid(
            f"{label} holds {total} bytes, past this server's limit of {limits.max_total_bytes // 1024} KiB for a "
            "method tree (MAX_METHOD_TREE_TOTAL_KIB).",
            reason="tree_too_large",
            limit=limits.max_total_bytes,
            field=field,
        )
    return hashed


def _root_escape(path: str) -> str | None:
    """How a key would leave the tree's root (read with either separator), or None."""
    windows = PureWindowsPath(path)
    if windows.drive:
        return "drive"
    if windows.root:
        return "rooted"
    if ".." in windows.parts:
        return "parent_segment"
    return None


def _refusal_problem(error: Any, field: str = FILES_FIELD, label: str | None = None) -> ApiProblem:
    """The standard's refusal of a map as the problem the official server answers it with."""
    from mthds.method_tree.vocabulary import TreeRefusalCode

    refusal = error.refusal
    names = [shown(name) for name in refusal.names]
    first = names[0] if names else None
    detail = f"{label or label_of(field)} is not a method tree. {error.message}"
    code = refusal.code
    if code == TreeRefusalCode.MISSING_BLOB:
        return ApiProblem(
            status=422,
            code="request.blobs_missing",
            detail=f"{label or label_of(field)} names, by hash, bytes this server does not hold at their stated size: {', '.join(names)}. "
            'Send those files inline (their text, or {"base64": ...}), or upload the blobs first.',
            params={"field": field, "missing_blobs": list(refusal.names)},
            location={"path": ["body", field]},
        )
    if code == TreeRefusalCode.INVALID_TREE_PATH:
        for name in refusal.names:
            escape = _root_escape(name)
            if escape is not None:
                return ApiProblem(
                    status=422,
                    code="security.input_path_refused",
                    detail=detail,
                    params={"rule": escape, "path": shown(name), **_field_param(field)},
                    # `file` as the official server locates it (its clients read it), `path` down to the entry
                    location={"file": shown(name), "path": ["body", field, shown(name)]},
                )
    if code == TreeRefusalCode.MALFORMED_ENTRY:
        return _invalid_request(detail, field)
    if code in (TreeRefusalCode.REFERENCE_NOT_IN_TREE, TreeRefusalCode.REFERENCE_LEAVES_TREE):
        reason = "not_in_tree" if code == TreeRefusalCode.REFERENCE_NOT_IN_TREE else "leaves_tree"
        return ApiProblem(
            status=422,
            code="method.resource_missing",
            detail=detail,
            params={"file": first or "", "reason": reason, **_field_param(field)},
            location={"path": ["body", field, first]} if first else None,
        )
    return package_invalid(detail, reason=str(code), path=first, field=field)


def refuse_python(contents: dict[str, bytes], field: str = FILES_FIELD) -> None:
    """A tree holding Python is refused before anything runs or is stored: loading it would import it in this process.
    The official server answers 501; this is the caller's method, so a 422 here."""
    python = sorted(path for path in contents if path.endswith(PYTHON_SUFFIX))
    if python:
        raise ApiProblem(
            status=422,
            code="pipelex.deployment.custom_code_requires_sandbox",
            detail=f"The method sent in `{field}` ships custom Python ({', '.join(shown(p) for p in python)}); "
            "this server runs no custom code. Remove the .py files (PipeFunc steps need a sandbox-hosted deployment).",
            params={"origin": "bundle", "path": shown(python[0]), **_field_param(field)},
            location={"path": ["body", field, shown(python[0])]},
        )


def check_manifest(contents: dict[str, bytes], field: str = FILES_FIELD) -> None:
    """A `METHODS.toml` at the tree's root must be UTF-8 text and a valid manifest (422 `method.package_invalid`)."""
    from mthds.method_tree.discovery import MANIFEST_NAME
    from mthds.package.exceptions import ManifestError
    from mthds.package.manifest.parser import parse_methods_toml

    data = contents.get(MANIFEST_NAME)
    if data is None:
        return
    try:
        parse_methods_toml(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise package_invalid(
            f"The {MANIFEST_NAME} of the method is not UTF-8 text.", reason="manifest_invalid", path=MANIFEST_NAME, field=field
        ) from exc
    except ManifestError as exc:
        detail = f"The {MANIFEST_NAME} of the method is not a valid manifest: {exc.message}"
        raise package_invalid(detail, reason="manifest_invalid", path=MANIFEST_NAME, field=field) from exc
    except RecursionError as exc:
        raise package_invalid(
            f"The {MANIFEST_NAME} of the method nests too deeply.", reason="manifest_invalid", path=MANIFEST_NAME, field=field
        ) from exc


async def read_method_tree(
    document: str, *, blobs: BlobStore, scope: str, limits: TreeLimits, field: str = FILES_FIELD, label: str | None = None
) -> MethodTreeFiles:
    """Read a `files` map (its JSON text) into a method tree, hash entries from ``scope``'s blobs. Raises ``ApiProblem``
    (4xx) for every refusal, naming the file or field."""
    from mthds.method_tree.exceptions import MethodTreeRefusedError, TreeSourceError
    from mthds.method_tree.file_entry import InMemoryBlobStore, read_file_map

    hashed = check_stated_limits(document, limits, field=field, label=label)
    held = InMemoryBlobStore()
    if hashed:
        try:
            found = await blobs.get_many(scope, hashed)
        except BlobCorrupted as exc:
            raise ApiProblem(
                status=500, code="storage.damaged", detail=f"A stored blob no longer matches its hash: {exc}.", params={"sha256": str(exc)}
            ) from exc
        for data in found.values():
            if data is not None:
                held.add(data)
    try:
        reading = read_file_map(document, blob_store=held)
    except MethodTreeRefusedError as exc:
        raise _refusal_problem(exc, field, label) from exc
    except TreeSourceError as exc:
        raise _invalid_request(f"{label or label_of(field)} is not a method tree. {exc.message}", field) from exc
    refuse_python(reading.contents, field)
    check_manifest(reading.contents, field)
    return MethodTreeFiles(
        contents=dict(reading.contents), digest=reading.tree.digest, hashes={f.path: f.sha256 for f in reading.tree.files}
    )
