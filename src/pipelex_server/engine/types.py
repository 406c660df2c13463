"""The engine's value types, shared by its modules and its callers: a finished run, checkpoints, the progress sink."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

ProgressSink = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class CheckedSetup:
    """A setup check that passed: the URL rewrites it made (original URL -> storage URI) and the fingerprint of the
    library crate the method loaded into (the runtime's, as the run will report it; None when it has none)."""

    rewrites: dict[str, str] = field(default_factory=dict)
    crate_fingerprint: str | None = None


@dataclass
class Checkpoints:
    """What a run saved of its finished steps (``saved``: step key -> working memory dump), and how to save more."""

    saved: dict[str, dict[str, Any]]
    save: Callable[[str, str, dict[str, Any]], Awaitable[None]]


@dataclass
class RunOutcome:
    """A completed run, already shaped as JSON."""

    main_stuff_name: str
    pipe_output: dict[str, Any]
    usage: dict[str, Any]
    input_rewrites: dict[str, str] = field(default_factory=dict)
    # the fingerprint of the library crate the run's method was loaded into (the runtime's; None when built from none)
    crate_fingerprint: str | None = None
