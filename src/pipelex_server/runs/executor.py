"""What the run service asks of an execution mode: in-process (runs/inprocess.py) or Temporal (temporal/executor.py),
chosen once, when the services are composed (composition.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from pipelex_server.runs.model import Caller, RunRequest


class Executor(Protocol):
    @property
    def running(self) -> Mapping[str, asyncio.Task[dict[str, Any]]]:
        """The runs this process is executing now, by key (none in Temporal mode: workers execute them)."""
        ...

    def start(self) -> None:
        """Start the mode's background work."""

    async def close(self, grace_seconds: float) -> None:
        """Stop it; runs executing here get ``grace_seconds`` to finish."""

    async def claim_slot(self) -> bool:
        """Take a free execution slot of this process at once, never waiting (/execute's run is then inserted RUNNING)."""
        ...

    def release_slot(self) -> None:
        """Give back the slot ``claim_slot`` took, for a run that was not inserted."""

    def placement(self, key: str) -> dict[str, Any]:
        """A new run's row fields that say where it executes: its lease, or its workflow id."""
        ...

    def adopt(self, key: str, *, next_seq: int, public_id: str) -> None:
        """A run was just inserted: keep what executing it here needs."""

    async def prepare_execute(
        self, run_id: str | None, request: RunRequest, check: Callable[[str], Awaitable[RunRequest]]
    ) -> tuple[str | None, RunRequest]:
        """What /execute does before its run is created; ``check(public_id)`` checks the request and stores its inputs
        under the run's prefix, as /start does. Returns the run id and the request to create the run with."""
        ...

    async def submit(self, row: dict[str, Any], *, created: bool, caller: Caller, request: RunRequest, request_id: str | None) -> None:
        """Have an unfinished run executed: one just created, or one a retried request named again."""

    async def wait(self, row: dict[str, Any]) -> dict[str, Any]:
        """Wait for a submitted run to end; returns it ended."""
        ...

    async def cancel(self, row: dict[str, Any]) -> None:
        """Cancel an unfinished run: it ends CANCELLED, at once or once what executes it stops."""

    async def redeliver(self, row: dict[str, Any]) -> None:
        """Send the run's callbacks again (the store has them scheduled already)."""

    async def health(self) -> dict[str, str]:
        """The mode's own readiness checks, by name: "ok", or why not."""
        ...
