"""A `method_ref` resolved into a method tree: parse the address, resolve the tag, fetch (cached), locate, read.

`github.com/<owner>/<repo>[/<selector>][@<tag>]` maps to `https://github.com/<owner>/<repo>.git` (git's own
configuration may rewrite it, `url.<base>.insteadOf`). `@<tag>` is looked up among the repository's tags only (a branch
of that name does not count); no tag means the default branch's HEAD. The package is the directory whose
`METHODS.toml` declares the address (`address`, or `address/name` for a package named in a library repository), read
from the commit's objects and listed by the standard's membership rule: a symbolic link it keeps is refused, a
submodule contributes nothing, the tree limits of `files` apply, and Python is refused as for `files`. The packages it
ships under `.mthds/methods/<name>/` (the local method cache's layout) are read the same way, each a tree of its own: the
caller makes them the run's dependency trees (api/protocol/requests.py), as it does a `bundle_b64` archive's.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelex_server.errors import ApiProblem
from pipelex_server.methods.cache import MethodCache
from pipelex_server.methods.git import MODE_SUBMODULE, MODE_SYMLINK, Git, GitFailed, TreeEntry

FIELD = "method_ref"
HOST = "github.com"
MANIFEST = "METHODS.toml"
VENDORED = ".mthds/methods"  # where a package ships the packages it calls
_URL_PREFIXES = (f"https://{HOST}/", f"http://{HOST}/")
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_LOCATION = {"path": ["body", FIELD]}


@dataclass(frozen=True)
class MethodRef:
    address: str  # github.com/<owner>/<repo>[/<selector>], normalized
    tag: str | None

    @property
    def text(self) -> str:
        return f"{self.address}@{self.tag}" if self.tag else self.address

    @property
    def clone_url(self) -> str:
        return "https://" + "/".join(self.address.split("/")[:3]) + ".git"


@dataclass(frozen=True)
class FetchedMethod:
    """A package read in full: its files' bytes by tree path, and what a run records of where they came from."""

    contents: dict[str, bytes]
    provenance: dict[str, Any]
    packages: dict[str, dict[str, bytes]] = field(default_factory=dict)  # shipped under .mthds/methods/<name>/, by name


def _invalid(detail: str, *, code: str = "request.invalid", status: int = 422, **params: Any) -> ApiProblem:
    return ApiProblem(status=status, code=code, detail=detail, params={"field": FIELD, **params}, location=_LOCATION)


def parse_method_ref(raw: str) -> MethodRef:
    """The address and tag of a `method_ref` (full GitHub URLs and `/tree/<branch>/` deep links are normalized)."""
    text = raw.strip()
    body, tag = text, None
    if "@" in text:
        body, tag = text.rsplit("@", 1)
        if not _TAG.match(tag):
            raise _invalid(f"The tag {tag!r} in method_ref {text!r} is not a git tag name (e.g. v1.0.0).")
    for prefix in _URL_PREFIXES:
        if body.startswith(prefix):
            body = f"{HOST}/{body[len(prefix) :]}"
            break
    body = body.rstrip("/").removesuffix(".git")
    if not body.startswith(f"{HOST}/"):
        raise _invalid(
            f"The method address {text[:200]!r} is not supported: only '{HOST}/<owner>/<repo>[/<selector>][@<tag>]' addresses are.",
            code="request.unsupported",
            reason="address_host",
        )
    parts = body.split("/")
    if len(parts) >= 5 and parts[3] in {"tree", "blob"}:
        parts = parts[:3] + parts[5:]
    if len(parts) < 3 or not all(_SEGMENT.match(segment) for segment in parts[1:]):
        raise _invalid(f"The method address {text[:200]!r} is not '{HOST}/<owner>/<repo>[/<selector>]' (letters, digits, '.', '_', '-').")
    return MethodRef(address="/".join(parts), tag=tag)


def _not_found(ref: MethodRef, detail: str) -> ApiProblem:
    return ApiProblem(status=404, code="method.not_found", detail=detail, params={"method_ref": ref.text}, location=_LOCATION)


def _fetch_failed(ref: MethodRef, error: GitFailed) -> ApiProblem:
    why = "the time allowed ran out" if error.timed_out else str(error)
    return ApiProblem(
        status=502,
        code="method.fetch_failed",
        detail=f"The method {ref.text!r} could not be fetched: {why}.",
        params={"method_ref": ref.text},
        location=_LOCATION,
    )


def _located(path: str | None) -> dict[str, Any]:
    """A refusal names the file by its path in the package (`.mthds/methods/<name>/...` for a shipped package's)."""
    return {"path": ["body", FIELD, path[:200]]} if path is not None else _LOCATION


def _package_invalid(ref: MethodRef, detail: str, *, reason: str, path: str | None = None, limit: int | None = None) -> ApiProblem:
    params: dict[str, Any] = {"reason": reason, "field": FIELD, "method_ref": ref.text}
    if path is not None:
        params["path"] = path[:200]
    if limit is not None:
        params["limit"] = limit
    return ApiProblem(
        status=422, code="method.package_invalid", detail=f"Method package {ref.text!r}: {detail}", params=params, location=_located(path)
    )


def package_dir_name(name: str) -> bool:
    """Whether ``name`` can name a shipped package's directory: one tree path segment the membership rule keeps (an
    entry under `.mthds/methods/` that is no such directory is no package, and is not read)."""
    from mthds.method_tree.file_entry import excluded_name_violation
    from mthds.method_tree.tree_path import tree_path_violation

    return bool(name) and "/" not in name and tree_path_violation(name) is None and not excluded_name_violation(f"{name}/x")


@dataclass(frozen=True)
class _Package:
    directory: str  # its path in the commit, "" at the root
    full_address: str
    display_name: str | None


class MethodSource:
    """Resolves `method_ref`s through git and the commit cache, under one deadline per request."""

    def __init__(
        self,
        *,
        cache: MethodCache,
        timeout_seconds: float,
        max_files: int,
        max_file_bytes: int,
        max_total_bytes: int,
        max_dependencies: int = 32,
        max_request_total_bytes: int | None = None,
    ) -> None:
        self.cache = cache
        self.git: Git = cache.git
        self.timeout_seconds = timeout_seconds
        self.max_files = max_files
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.max_dependencies = max_dependencies  # MAX_METHOD_DEPENDENCIES: shipped packages beyond it are refused unread
        self.max_request_total_bytes = max_request_total_bytes or max_total_bytes

    async def fetch(self, raw: str) -> FetchedMethod:
        """The package ``raw`` names, read in full. Raises ``ApiProblem``: 404 `method.not_found` (no such tag or
        package), 502 `method.fetch_failed` (git could not reach or read the repository in time), 422 otherwise."""
        ref = parse_method_ref(raw)
        deadline = time.monotonic() + self.timeout_seconds
        try:
            commit, remote_ref = await self._resolve(ref, deadline=deadline)
            async with self.cache.pinned(url=ref.clone_url, ref=remote_ref, commit=commit, deadline=deadline) as (repo, commit):
                entries = await self.git.ls_tree(repo, commit, deadline=deadline)
                package = await self._locate(ref, repo, entries, deadline=deadline)
                contents, packages, digest = await self._read(ref, repo, entries, package, deadline=deadline)
        except GitFailed as error:
            raise _fetch_failed(ref, error) from None
        python = sorted(path for path in contents if path.endswith(".py")) + sorted(
            f"{VENDORED}/{name}/{path}" for name, files in packages.items() for path in files if path.endswith(".py")
        )
        if python:
            raise ApiProblem(
                status=422,
                code="pipelex.deployment.custom_code_requires_sandbox",
                detail=f"Method package {ref.text!r} ships custom Python ({', '.join(python[:5])}); this server runs no custom code.",
                params={"origin": "package", "path": python[0][:200], "field": FIELD, "method_ref": ref.text},
                location=_located(python[0]),
            )
        provenance = {
            "address": package.full_address,
            "tag": ref.tag,
            "commit_sha": commit,
            "tree_digest": digest,
            "display_name": package.display_name,
        }
        return FetchedMethod(contents=contents, provenance=provenance, packages=packages)

    async def _resolve(self, ref: MethodRef, *, deadline: float) -> tuple[str, str]:
        """The commit the reference names now, and the remote ref to fetch it by."""
        if ref.tag:
            tag_ref = f"refs/tags/{ref.tag}"
            pairs = await self.git.ls_remote(ref.clone_url, [tag_ref, tag_ref + "^{}"], deadline=deadline)
            peeled = [sha for sha, name in pairs if name == tag_ref + "^{}"]
            direct = [sha for sha, name in pairs if name == tag_ref]
            if peeled or direct:
                return (peeled or direct)[0], tag_ref
            raise _not_found(
                ref, f"{ref.tag!r} is not a tag of the repository behind {ref.text!r} (`@<tag>` names a git tag; branches do not count)."
            )
        pairs = await self.git.ls_remote(ref.clone_url, ["HEAD"], deadline=deadline)
        head = [sha for sha, name in pairs if name == "HEAD"]
        if not head:
            raise _not_found(ref, f"The repository behind {ref.text!r} has no default branch (is it empty?).")
        return head[0], "HEAD"

    async def _locate(self, ref: MethodRef, repo: Path, entries: list[TreeEntry], *, deadline: float) -> _Package:
        from mthds.package.exceptions import ManifestError
        from mthds.package.manifest.parser import parse_methods_toml

        manifests = [
            entry
            for entry in entries
            if entry.path.rsplit("/", 1)[-1] == MANIFEST
            and entry.mode not in (MODE_SYMLINK, MODE_SUBMODULE)
            and not any(part.startswith(".") for part in entry.path.split("/")[:-1])
        ]
        blobs = await self.git.read_blobs(repo, [entry.object_sha for entry in manifests], deadline=deadline)
        wanted = ref.address.casefold()
        matches: list[_Package] = []
        broken: list[str] = []
        found: list[str] = []
        for entry in manifests:
            directory = entry.path.rpartition("/")[0]
            try:
                manifest = parse_methods_toml(blobs[entry.object_sha].decode("utf-8"))
            except (ManifestError, UnicodeDecodeError, RecursionError, ValueError):
                broken.append(entry.path)
                continue
            full = f"{manifest.address}/{manifest.name}" if manifest.name else manifest.address
            found.append(full)
            if (manifest.name and full.casefold() == wanted) or (manifest.address.casefold() == wanted and directory == ""):
                matches.append(_Package(directory=directory, full_address=full, display_name=manifest.display_name))
        if len(matches) == 1:
            return matches[0]
        if matches:
            candidates = sorted(match.full_address for match in matches)
            raise ApiProblem(
                status=422,
                code="method.ambiguous",
                detail=f"The method address {ref.text!r} matches several packages: {', '.join(candidates)}.",
                params={"method_ref": ref.text, "candidates": candidates},
                location=_LOCATION,
            )
        if broken:
            raise _package_invalid(ref, f"its {broken[0]} is not a valid manifest.", reason="manifest_invalid", path=broken[0])
        listed = f" Packages it holds: {', '.join(sorted(found))}." if found else f" It holds no {MANIFEST}."
        raise _not_found(ref, f"No package at {ref.address!r} in the repository's commit.{listed}")

    async def _read(
        self, ref: MethodRef, repo: Path, entries: list[TreeEntry], package: _Package, *, deadline: float
    ) -> tuple[dict[str, bytes], dict[str, dict[str, bytes]], str]:
        prefix = f"{package.directory}/" if package.directory else ""
        members = [
            TreeEntry(mode=entry.mode, object_sha=entry.object_sha, path=entry.path[len(prefix) :], size=entry.size)
            for entry in entries
            if entry.path.startswith(prefix) and entry.mode != MODE_SUBMODULE
        ]
        shipped = self._shipped(ref, members)
        # a first bound on what the commit states, before any byte is read (the listing applies the exact limits); the
        # slack is for files the membership rule leaves out
        max_members = 4 * self.max_files * (1 + len(shipped))
        max_bytes = max(4 * self.max_total_bytes, 2 * self.max_request_total_bytes)
        if len(members) > max_members or sum(entry.size for entry in members) > max_bytes:
            raise _package_invalid(
                ref, "the package is past this server's method tree limits.", reason="tree_too_large", limit=self.max_total_bytes
            )
        blobs = await self.git.read_blobs(repo, [entry.object_sha for entry in members], deadline=deadline)
        return await asyncio.to_thread(self._list, ref, members, blobs, shipped)

    def _shipped(self, ref: MethodRef, members: list[TreeEntry]) -> list[str]:
        """The names of the packages shipped under `.mthds/methods/`, judged on the commit's listing: a symbolic link
        where a package or its folder would be is refused (it would read outside the package), and more packages than
        MAX_METHOD_DEPENDENCIES are refused before any is read."""
        names: set[str] = set()
        for entry in members:
            parts = entry.path.split("/")
            linked = entry.mode == MODE_SYMLINK and (
                entry.path in (".mthds", VENDORED) or (entry.path.startswith(f"{VENDORED}/") and len(parts) == 3)
            )
            if linked:
                raise _package_invalid(
                    ref,
                    f"the symbolic link {entry.path!r} is refused: a package ships its packages as folders.",
                    reason="symlink",
                    path=entry.path,
                )
            if entry.path.startswith(f"{VENDORED}/") and len(parts) > 3 and package_dir_name(parts[2]):
                names.add(parts[2])
        if len(names) > self.max_dependencies:
            raise _package_invalid(
                ref,
                f"it ships {len(names)} packages under {VENDORED}/, past this server's limit of {self.max_dependencies} dependency "
                "trees (MAX_METHOD_DEPENDENCIES).",
                reason="too_many_dependencies",
                limit=self.max_dependencies,
            )
        return sorted(names)

    def _list(
        self, ref: MethodRef, members: list[TreeEntry], blobs: dict[str, bytes], shipped: list[str]
    ) -> tuple[dict[str, bytes], dict[str, dict[str, bytes]], str]:
        """Stage the package's files as the commit stores them (a symbolic link as one), list them and each shipped
        package by the standard's membership rule under the tree limits, and read the kept files."""
        staging = Path(tempfile.mkdtemp(prefix="pipelex-server-method-"))
        try:
            root = staging / "package"
            root.mkdir()
            for entry in members:
                target = root.joinpath(*entry.path.split("/"))
                if not target.resolve().is_relative_to(root.resolve()):
                    raise _package_invalid(ref, f"the path {entry.path!r} leaves the package.", reason="invalid_tree_path", path=entry.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                if entry.mode == MODE_SYMLINK:
                    target.symlink_to(blobs[entry.object_sha].decode("utf-8", "surrogateescape"))
                else:
                    target.write_bytes(blobs[entry.object_sha])
            contents, digest = self._listed(ref, root, prefix="")
            packages = {
                name: self._listed(ref, root.joinpath(*VENDORED.split("/"), name), prefix=f"{VENDORED}/{name}/")[0] for name in shipped
            }
            return contents, packages, digest
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _listed(self, ref: MethodRef, root: Path, *, prefix: str) -> tuple[dict[str, bytes], str]:
        """The files of the tree staged at ``root`` and its digest; a refusal names a file by its path in the package
        (``prefix`` + its tree path)."""
        from mthds.method_tree.exceptions import MethodTreeRefusedError, TreeLimitError, TreeSourceError
        from mthds.method_tree.lister import list_method_tree_at_root
        from mthds.method_tree.models import TreeLimits
        from mthds.method_tree.vocabulary import TreeRefusalCode

        limits = TreeLimits(max_files=self.max_files, max_file_bytes=self.max_file_bytes, max_total_bytes=self.max_total_bytes)
        try:
            tree = list_method_tree_at_root(root, limits=limits)
        except MethodTreeRefusedError as exc:
            names = [f"{prefix}{name}" for name in exc.refusal.names]
            if exc.refusal.code == TreeRefusalCode.SYMBOLIC_LINK:
                path = names[0] if names else None
                raise _package_invalid(
                    ref, f"the symbolic link {path!r} is refused: a package holds files, not links.", reason="symlink", path=path
                ) from None
            raise _package_invalid(ref, exc.message, reason=str(exc.refusal.code), path=names[0] if names else prefix or None) from None
        except TreeLimitError as exc:
            reason = {"file_count": "too_many_files", "file_bytes": "file_too_large"}.get(str(exc.kind), "tree_too_large")
            where = f" in {prefix.rstrip('/')}" if prefix else ""
            raise _package_invalid(
                ref, f"past this server's method tree limits{where} ({exc.message}).", reason=reason, limit=exc.limit, path=prefix or None
            ) from None
        except TreeSourceError as exc:
            raise _package_invalid(ref, exc.message, reason="manifest_invalid", path=f"{prefix}{MANIFEST}") from None
        return {path: tree.file_location(path).read_bytes() for path in tree.tree_paths}, tree.digest
