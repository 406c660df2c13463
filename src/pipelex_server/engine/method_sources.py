"""The run sources beside `files`: a `bundle_b64` archive read into a method tree (its shipped packages its dependency
trees), the files `resources` sends (decoded, then joined to a tree or handed to the runtime as its submitted files),
and `dependencies` (address -> map of file entries), each tree read by the one tree reader, under the request limits.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pipelex_server.engine.method_bundle import (
    BUNDLE_FIELD,
    VENDORED_METHODS_PREFIX,
    BundleLimits,
    decode_bundle,
    map_document,
    split_vendored,
)
from pipelex_server.engine.method_tree_files import MethodTreeFiles, TreeLimits, package_invalid, read_method_tree, shown
from pipelex_server.errors import ApiProblem

if TYPE_CHECKING:
    from pipelex_server.blobs import BlobStore
    from pipelex_server.settings import Settings

RESOURCES_FIELD = "resources"
DEPENDENCIES_FIELD = "dependencies"


@dataclass(frozen=True)
class SourceLimits:
    """The limits on what one request carries beside its tree (the official server's names and defaults)."""

    bundle: BundleLimits
    max_resources: int
    max_resource_file_bytes: int
    max_resources_total_bytes: int
    max_dependencies: int
    max_request_total_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> SourceLimits:
        return cls(
            bundle=BundleLimits(max_files=settings.max_bundle_files, max_total_bytes=settings.max_bundle_total_kib * 1024),
            max_resources=settings.max_resources_per_request,
            max_resource_file_bytes=settings.max_resource_file_kib * 1024,
            max_resources_total_bytes=settings.max_resources_total_kib * 1024,
            max_dependencies=settings.max_method_dependencies,
            max_request_total_bytes=settings.max_method_request_total_kib * 1024,
        )


def _resources_problem(status: int, code: str, detail: str, path: str | None = None, **params: Any) -> ApiProblem:
    location = ["body", RESOURCES_FIELD] + ([shown(path)] if path is not None else [])
    named = {"path": shown(path)} if path is not None else {}
    return ApiProblem(
        status=status, code=code, detail=detail, params={"field": RESOURCES_FIELD, **named, **params}, location={"path": location}
    )


def _canonical(path: str) -> str:
    """A resource path's one spelling, as the runtime keys submitted files; 422 naming it when it cannot name a file."""
    from pipelex.core.bundle_resources.bundle_resource import canonical_resource_path_or_none, resource_path_refusal, root_escape_of

    canonical = canonical_resource_path_or_none(path=path)
    if canonical is not None:
        return canonical
    escape = root_escape_of(path=path)
    reason = resource_path_refusal(path=path) or "it names no file"
    detail = f"The file {shown(path)!r} sent in `resources` cannot be a file of the method: {reason}."
    if escape is not None:
        raise _resources_problem(422, "security.input_path_refused", detail, path, rule=str(escape.rule))
    raise _resources_problem(422, "request.invalid", detail, path)


def decode_resources(resources: dict[str, Any] | None, limits: SourceLimits) -> dict[str, bytes] | None:
    """The files `resources` sends (path -> standard base64), decoded and keyed by canonical path; None when empty.
    Every path is judged before any value is decoded; sizes are read off the encoded length before decoding."""
    if not resources:
        return None
    if len(resources) > limits.max_resources:
        raise _resources_problem(
            422,
            "request.invalid",
            f"`resources` sends {len(resources)} files, past this server's limit of {limits.max_resources} (MAX_RESOURCES_PER_REQUEST).",
            limit=limits.max_resources,
        )
    by_path: dict[str, tuple[str, Any]] = {}
    for path, encoded in resources.items():
        canonical = _canonical(path)
        if canonical in by_path:
            raise _resources_problem(422, "request.invalid", f"Two files sent in `resources` name the same file {canonical!r}.", path)
        by_path[canonical] = (path, encoded)
    files: dict[str, bytes] = {}
    total = 0
    for canonical, (path, encoded) in by_path.items():
        if not isinstance(encoded, str):
            raise _resources_problem(422, "request.invalid", f"The file {shown(path)!r} in `resources` must be a base64 string.", path)
        size = max(0, len(encoded) * 3 // 4 - (2 if encoded.endswith("==") else 1 if encoded.endswith("=") else 0))
        if size > limits.max_resource_file_bytes:
            raise _resources_problem(
                413,
                "request.too_large",
                f"The file {shown(path)!r} in `resources` is {size} bytes, past this server's limit of "
                f"{limits.max_resource_file_bytes // 1024} KiB for one file (MAX_RESOURCE_FILE_KIB).",
                path,
                limit=limits.max_resource_file_bytes,
                size=size,
            )
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _resources_problem(
                422, "request.malformed", f"The file {shown(path)!r} in `resources` is not valid base64.", path, reason="bad_base64"
            ) from exc
        total += len(data)
        if total > limits.max_resources_total_bytes:
            raise _resources_problem(
                413,
                "request.too_large",
                f"The files sent in `resources` pass this server's limit of {limits.max_resources_total_bytes // 1024} KiB "
                "in all (MAX_RESOURCES_TOTAL_KIB).",
                limit=limits.max_resources_total_bytes,
                size=total,
            )
        files[canonical] = data
    return files


def join_resources(tree: MethodTreeFiles, resources: dict[str, bytes] | None, tree_limits: TreeLimits) -> MethodTreeFiles:
    """The tree with the files `resources` sends joined at their paths from its root: the same bytes under a path the
    tree holds change nothing; other bytes there, or a path no tree can hold, are a 422 naming `resources`."""
    from mthds.method_tree.file_entry import excluded_name_violation
    from mthds.method_tree.tree_path import path_collisions, tree_path_violation

    if not resources:
        return tree
    contents = dict(tree.contents)
    for path, data in resources.items():
        held = contents.get(path)
        if held is not None:
            if held != data:
                raise _resources_problem(
                    422,
                    "request.invalid",
                    f"Two different files are named {shown(path)!r}, one in `resources` and one in the method's files: "
                    "send one of them, or rename one and the step that reads it.",
                    path,
                )
            continue
        violation = tree_path_violation(path) or (
            "the membership rule keeps it out of every method tree" if excluded_name_violation(path) else None
        )
        if violation is not None:
            detail = f"The file {shown(path)!r} sent in `resources` cannot be a file of the method's tree: {violation}."
            raise _resources_problem(422, "request.invalid", detail, path)
        contents[path] = data
    collisions = path_collisions(contents)
    if collisions:
        detail = f"The files sent in `resources` collide with the method's files: {', '.join(shown(p) for p in collisions)}."
        raise _resources_problem(422, "request.invalid", detail, collisions[0])
    total = sum(len(data) for data in contents.values())
    if len(contents) > tree_limits.max_files or total > tree_limits.max_total_bytes:
        raise package_invalid(
            f"The method's tree with the files sent in `resources` holds {len(contents)} files and {total} bytes, past this "
            "server's method tree limits (MAX_METHOD_TREE_FILES, MAX_METHOD_TREE_TOTAL_KIB).",
            reason="tree_too_large",
            field=RESOURCES_FIELD,
        )
    return replace(MethodTreeFiles.of(contents), dependencies=tree.dependencies)


def under_root(problem: ApiProblem, root: str) -> ApiProblem:
    """A refusal of a file of a nested tree (a dependency, a shipped package) named as the request names it: its
    ``location.path`` and ``params.path`` prefixed with the tree's root (``<address>/``, ``.mthds/methods/<name>/``)."""
    location = problem.members.get("location")
    if isinstance(location, dict) and isinstance(location.get("path"), list) and len(location["path"]) >= 2:
        where = location["path"]
        named = f"{root}{where[2]}" if len(where) > 2 else root.rstrip("/")
        problem.members["location"] = {**location, "path": [*where[:2], named]}
    params = problem.members.get("params")
    if isinstance(params, dict) and isinstance(params.get("path"), str) and not params["path"].startswith(root):
        problem.members["params"] = {**params, "path": f"{root}{params['path']}"}
    return problem


def check_request_total(tree: MethodTreeFiles, limits: SourceLimits, *, field: str) -> None:
    """A method and its dependency trees together: at most ``max_dependencies`` trees beside it, and the request limit
    on their bytes in all (MAX_METHOD_DEPENDENCIES, MAX_METHOD_REQUEST_TOTAL_KIB)."""
    if len(tree.dependencies) > limits.max_dependencies:
        raise package_invalid(
            f"The method carries {len(tree.dependencies)} dependencies, past this server's limit of {limits.max_dependencies} "
            "dependency trees (MAX_METHOD_DEPENDENCIES).",
            reason="too_many_dependencies",
            limit=limits.max_dependencies,
            field=field,
        )
    total = sum(len(data) for each in (tree, *tree.dependencies.values()) for data in each.contents.values())
    if total > limits.max_request_total_bytes:
        raise package_invalid(
            f"The method holds {total} bytes across its tree and its dependency trees, past this server's limit of "
            f"{limits.max_request_total_bytes // 1024} KiB (MAX_METHOD_REQUEST_TOTAL_KIB).",
            reason="request_too_large",
            limit=limits.max_request_total_bytes,
            field=field,
        )


def dependency_address(tree: MethodTreeFiles, *, fallback_name: str, field: str, root: str) -> str:
    """The address a dependency tree's manifest declares (`address/name`), as a reference names the package; a tree
    without a `METHODS.toml` is no package (422 naming it)."""
    from mthds.method_tree.discovery import MANIFEST_NAME
    from mthds.package.manifest.parser import parse_methods_toml

    data = tree.contents.get(MANIFEST_NAME)
    if data is None:
        raise package_invalid(
            f"The package {shown(root)!r} holds no {MANIFEST_NAME} at its root, so no reference could find it.",
            reason="manifest_missing",
            path=f"{root}{MANIFEST_NAME}",
            field=field,
        )
    manifest = parse_methods_toml(data.decode("utf-8"))  # checked when the tree was read
    return f"{manifest.address}/{manifest.name or fallback_name}"


def add_dependency(dependencies: dict[str, MethodTreeFiles], address: str, tree: MethodTreeFiles, *, field: str, root: str) -> None:
    """Add a dependency tree under its address; a second one a reference could not tell apart (case-insensitive) is a 422."""
    if any(known.casefold() == address.casefold() for known in dependencies):
        raise package_invalid(
            f"The package {shown(root)!r} declares the address {shown(address)!r}, which another dependency declares too.",
            reason="dependency_address_collision",
            path=root,
            field=field,
        )
    dependencies[address] = tree


async def read_bundle_method(
    encoded: str, *, limits: SourceLimits, tree_limits: TreeLimits, blobs: BlobStore, scope: str
) -> MethodTreeFiles:
    """A `bundle_b64` archive read as a method tree, each package it ships under `.mthds/methods/<name>/` a dependency
    tree keyed by the address its manifest declares. Raises ``ApiProblem`` (4xx) naming the member or the field."""
    own, vendored = split_vendored(decode_bundle(encoded, limits.bundle))
    tree = await read_method_tree(map_document(own), blobs=blobs, scope=scope, limits=tree_limits, field=BUNDLE_FIELD)
    dependencies: dict[str, MethodTreeFiles] = {}
    for name, entries in vendored.items():
        root = f"{VENDORED_METHODS_PREFIX}{name}/"
        label = f"The package {root!r} of the `bundle_b64` archive"
        try:
            package = await read_method_tree(
                map_document(entries), blobs=blobs, scope=scope, limits=tree_limits, field=BUNDLE_FIELD, label=label
            )
        except ApiProblem as problem:
            raise under_root(problem, root) from problem.__cause__
        address = dependency_address(package, fallback_name=name, field=BUNDLE_FIELD, root=root)
        add_dependency(dependencies, address, package, field=BUNDLE_FIELD, root=root)
    method = replace(tree, dependencies=dependencies)
    check_request_total(method, limits, field=BUNDLE_FIELD)
    return method
