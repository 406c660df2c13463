"""Run and event ids: the public id a caller names a run by, the server-wide key it is stored under, Last-Event-ID.

A run's public id (``pipeline_run_id``) is unique per caller only: two callers may both have a run ``order-42``.
Everything that must be unique server-wide (the store's primary key, the rows that reference it, the event stream,
the Temporal workflow id) uses the run's key instead, a random id the server draws and never shows. Answers, event
data, callbacks and stored objects' paths (``{caller}/runs/{public id}/...``) use the public id.
"""

from __future__ import annotations

import re
import uuid

from pipelex_server.errors import ApiProblem

# The event ids this server sends are positive integers of the store's INTEGER column: at most 2**31 - 1.
MAX_EVENT_ID = 2**31 - 1
_EVENT_ID = re.compile(r"[0-9]{1,10}")


def new_public_id() -> str:
    """The id of a run its caller did not name."""
    return str(uuid.uuid4())


def new_run_key() -> str:
    """A run's server-wide key: random, so a run deleted and created again under the same public id is a new run
    (with a new event stream and a new Temporal workflow), and a caller cannot pick another caller's key."""
    return uuid.uuid4().hex


def parse_last_event_id(value: str | None) -> int:
    """The event id a stream resumes after (0 for none). Only ids this server could have sent are accepted: plain
    ASCII digits up to ``MAX_EVENT_ID``; anything else (``"1e3"``, ``"-1"``, other scripts' digits, 10,000 digits)
    is refused with 400 ``request.invalid_header`` rather than guessed at."""
    if value is None or value == "":
        return 0
    if _EVENT_ID.fullmatch(value) is None or int(value) > MAX_EVENT_ID:
        shown = value if len(value) <= 32 else value[:32] + "..."
        raise ApiProblem(
            status=400,
            code="request.invalid_header",
            detail=f"Last-Event-ID must be the id of an event this server sent (ASCII digits, at most {MAX_EVENT_ID}); got {shown!r}.",
            params={"header": "Last-Event-ID"},
        )
    return int(value)
