"""A file record as the SDK reads it (FileSummary, FileRecord), storage addresses, format keys, and the name rules."""

from __future__ import annotations

import unicodedata
from typing import Any

from pipelex_server.runs.documents import iso
from pipelex_server.storage import validate_key

SCHEME = "pipelex-storage://"
MAX_NAME_CHARS = 512
MAX_URI_CHARS = 512

# format key -> (exact media types, media type families); anything else is "other"
FORMATS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pdf": (("application/pdf",), ()),
    "docx": (("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "application/msword"), ()),
    "xlsx": (("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "application/vnd.ms-excel"), ()),
    "pptx": (("application/vnd.openxmlformats-officedocument.presentationml.presentation", "application/vnd.ms-powerpoint"), ()),
    "image": ((), ("image/",)),
    "audio": ((), ("audio/",)),
    "video": ((), ("video/",)),
    "html": (("text/html", "application/xhtml+xml"), ()),
    "markdown": (("text/markdown", "text/x-markdown"), ()),
    "csv": (("text/csv",), ()),
    "json": (("application/json",), ()),
    "text": (("text/plain",), ()),
}


def format_key(media_type: str) -> str:
    for key, (exact, families) in FORMATS.items():
        if media_type in exact or media_type.startswith(families or ("\0",)):
            return key
    return "other"


def uri_of(key: str) -> str:
    return SCHEME + key


def key_of(uri: str) -> str | None:
    """The object key a ``pipelex-storage://`` address names, or None when it is not a well-formed address."""
    if not isinstance(uri, str) or not uri.startswith(SCHEME) or len(uri) > MAX_URI_CHARS:
        return None
    try:
        return validate_key(uri.removeprefix(SCHEME))
    except ValueError:
        return None


def scope_of(key: str) -> str:
    return key.split("/", 1)[0]


def basename(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def clean_name(name: str) -> str:
    """A name without the characters no list or header can show (control and format characters, a right-to-left
    override among them, line and paragraph separators), its ends trimmed."""
    return "".join(char for char in name if unicodedata.category(char) not in ("Cc", "Cf", "Zl", "Zp", "Cs")).strip()


def extension_of(name: str) -> str:
    stem, dot, extension = name.rpartition(".")
    return f".{extension}" if dot and stem and extension and " " not in extension else ""


def renamed(name: str, original_name: str) -> str:
    """The rename rule: cleaned, and ending with the original name's extension (case aside)."""
    cleaned = clean_name(name)
    extension = extension_of(original_name)
    if cleaned and extension and not cleaned.lower().endswith(extension.lower()):
        cleaned += extension
    return cleaned


def _method_version(value: str | None) -> int | str | None:
    if value is None or value == "draft":
        return value
    return int(value) if value.isdecimal() else None


def origin(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "surface": row["surface"],
        "run_id": row["run_id"],
        "method_id": row["method_id"],
        "method_version": _method_version(row["method_version"]),
    }


def summary(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "file_id": row["id"],
        "uri": uri_of(row["key"]),
        "name": row["name"],
        "media_type": row["media_type"],
        "format": format_key(row["media_type"]),
        "size": row["size"],
        "kind": row["kind"],
        "origin": origin(row),
        "created_at": iso(row["created_at"]),
        "created_by": row["caller_id"],
    }


def record(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **summary(row),
        "source_uri": None,
        "original_name": row["original_name"],
        "sha256": row["sha256"],
        "role": row["role"],
        "state": "stored",
    }
