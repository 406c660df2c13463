"""Opening a `bundle_b64` archive (a base64 zip of a method's folder) into the entries of a method tree, or refusing it.

The archive is bounded before it is decoded (its size read off the encoded length), then its members are judged before
any is decompressed (count, encryption, symlinks, declared sizes and compression ratio), then each is read through a
bounded stream against the remaining decompressed budget, so a member whose header under-states its size cannot
decompress past the ceiling, and its bytes must match the size and CRC its header declares. The members' names are not
judged here: the entries become a `files`-like map (a name given twice kept twice) that the tree's reader judges by the
tree's own rules (`engine/method_tree_files.py`), each refusal naming the member under `bundle_b64`. Members under
`.mthds/methods/<name>/` are the packages the archive ships (the local method cache's layout): dependency trees.
Nothing is written to disk.
"""

from __future__ import annotations

import base64
import binascii
import json
import zipfile
import zlib
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pipelex_server.engine.method_tree_files import package_invalid, shown
from pipelex_server.errors import ApiProblem

BUNDLE_FIELD = "bundle_b64"
VENDORED_METHODS_PREFIX = ".mthds/methods/"
PROVENANCE_FILENAME = ".provenance.json"  # the method cache's sidecar at a shipped package's root: no file of it
# A member inflating past this ratio (uncompressed / compressed) is a bomb once it is past RATIO_FLOOR_BYTES: text a
# method ships compresses far less (deflate's own ceiling is ~1032:1).
MAX_COMPRESSION_RATIO = 200
RATIO_FLOOR_BYTES = 1024 * 1024
_S_IFMT = 0o170000
_S_IFLNK = 0o120000
_ZIP_UNIX_SYSTEM = 3


@dataclass(frozen=True)
class BundleLimits:
    max_files: int
    max_total_bytes: int


def _problem(status: int, code: str, detail: str, *, member: str | None = None, **params: Any) -> ApiProblem:
    path = ["body", BUNDLE_FIELD] + ([shown(member)] if member is not None else [])
    named = {"member": shown(member)} if member is not None else {}
    # `field` as the official server locates a bundle refusal (its clients read it), `path` down to the member
    location = {"field": BUNDLE_FIELD, "path": path}
    return ApiProblem(status=status, code=code, detail=detail, params={"field": BUNDLE_FIELD, **named, **params}, location=location)


def _member_refused(member: str, reason: str, detail: str) -> ApiProblem:
    return _problem(
        422, "method.package_invalid", f"The `bundle_b64` archive member {shown(member)!r} {detail}", member=member, reason=reason
    )


def _decoded_size(encoded: str) -> int:
    padding = 2 if encoded.endswith("==") else 1 if encoded.endswith("=") else 0
    return max(0, len(encoded) * 3 // 4 - padding)


def _open_archive(encoded: str, limits: BundleLimits) -> zipfile.ZipFile:
    size = _decoded_size(encoded)
    if size > limits.max_total_bytes:
        raise _problem(
            413,
            "request.too_large",
            f"bundle_b64 is {size} bytes, past this server's limit of {limits.max_total_bytes // 1024} KiB (MAX_BUNDLE_TOTAL_KIB).",
            limit=limits.max_total_bytes,
            size=size,
        )
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _problem(422, "request.malformed", "bundle_b64 is not valid base64.", reason="bad_base64") from exc
    try:
        return zipfile.ZipFile(BytesIO(raw))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise _problem(422, "request.malformed", "bundle_b64 is not a valid zip archive.", reason="bad_zip") from exc


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == _ZIP_UNIX_SYSTEM and (info.external_attr >> 16) & _S_IFMT == _S_IFLNK


def _judge_members(members: list[zipfile.ZipInfo], limits: BundleLimits) -> None:
    """Everything decidable from the central directory, before a byte is decompressed."""
    if not members:
        raise _problem(422, "request.invalid", "The `bundle_b64` archive holds no file.")
    if len(members) > limits.max_files:
        raise package_invalid(
            f"The `bundle_b64` archive holds {len(members)} files, past this server's limit of {limits.max_files} (MAX_BUNDLE_FILES).",
            reason="bundle_too_many_files",
            limit=limits.max_files,
            field=BUNDLE_FIELD,
        )
    declared = 0
    for info in members:
        if info.flag_bits & 0x1:
            raise _member_refused(info.filename, "encrypted_member", "is encrypted; send the archive unencrypted.")
        if _is_symlink(info):
            raise _member_refused(info.filename, "symlink_member", "is a symbolic link; an archive ships files only.")
        if info.file_size > RATIO_FLOOR_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise _member_refused(
                info.filename,
                "compression_ratio",
                f"inflates {info.compress_size} bytes into {info.file_size}, past the ratio of {MAX_COMPRESSION_RATIO}:1 "
                "this server reads (a zip bomb).",
            )
        declared += info.file_size
    if declared > limits.max_total_bytes:
        raise _too_large_decompressed(limits, declared)


def _too_large_decompressed(limits: BundleLimits, size: int) -> ApiProblem:
    return package_invalid(
        f"The `bundle_b64` archive decompresses into {size} bytes or more, past this server's limit of "
        f"{limits.max_total_bytes // 1024} KiB (MAX_BUNDLE_TOTAL_KIB).",
        reason="bundle_too_large",
        limit=limits.max_total_bytes,
        field=BUNDLE_FIELD,
    )


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, budget: int, limits: BundleLimits, total: int) -> bytes:
    try:
        with archive.open(info) as stream:
            data = stream.read(budget + 1)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError, ValueError, OSError) as exc:
        raise _member_refused(info.filename, "member_unreadable", f"cannot be read: {exc}.") from exc
    if len(data) > budget:
        raise _too_large_decompressed(limits, total + len(data))
    if len(data) != info.file_size or zlib.crc32(data) != info.CRC:
        raise _member_refused(info.filename, "member_size_mismatch", "does not hold the bytes its header declares (size or CRC).")
    return data


def decode_bundle(encoded: str, limits: BundleLimits) -> list[tuple[str, bytes]]:
    """The archive's file members as ``(name, bytes)`` in archive order, directories skipped, a name given twice kept
    twice (for the tree's reader to refuse). Raises ``ApiProblem`` (4xx) naming the member or the field."""
    with _open_archive(encoded, limits) as archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        _judge_members(members, limits)
        entries: list[tuple[str, bytes]] = []
        total = 0
        for info in members:
            data = _read_member(archive, info, limits.max_total_bytes - total, limits, total)
            total += len(data)
            entries.append((info.filename, data))
    return entries


def map_document(entries: list[tuple[str, bytes]]) -> str:
    """A `files`-like map of base64 entries, as JSON text, a key given twice written twice."""
    members = (f'{json.dumps(name)}:{{"base64":"{base64.b64encode(data).decode("ascii")}"}}' for name, data in entries)
    return "{" + ",".join(members) + "}"


def split_vendored(entries: list[tuple[str, bytes]]) -> tuple[list[tuple[str, bytes]], dict[str, list[tuple[str, bytes]]]]:
    """The method's own entries, and those of each package shipped under `.mthds/methods/<name>/` (by package name).
    An entry directly under the prefix, or under a name no package directory can take, stays the method's own, which
    the tree's rule refuses (a dot directory is no file of a tree)."""
    own: list[tuple[str, bytes]] = []
    vendored: dict[str, list[tuple[str, bytes]]] = {}
    for name, data in entries:
        package, _, inner = name.removeprefix(VENDORED_METHODS_PREFIX).partition("/")
        if name.startswith(VENDORED_METHODS_PREFIX) and inner and package not in ("", ".", "..") and not package.startswith("."):
            if inner != PROVENANCE_FILENAME:
                vendored.setdefault(package, []).append((inner, data))
        else:
            own.append((name, data))
    return own, vendored
