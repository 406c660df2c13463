"""Usage accounting: a caller's runs, tokens and cost in a time window, grouped by day, pipe code or model, summed from
the run store (the same figures the run documents show), and the fleet's queued/running counts for the metrics."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pipelex_server.errors import ApiProblem
from pipelex_server.runs.model import Caller
from pipelex_server.store.usage import UsageRepository

GroupBy = Literal["day", "pipe_code", "model"]
DEFAULT_WINDOW = timedelta(days=30)
MAX_WINDOW = timedelta(days=400)


@dataclass
class _Tally:
    runs: int = 0
    tokens: dict[str, int] = field(default_factory=dict)
    cost_usd: float = 0.0
    unpriced_runs: int = 0  # runs (or, by model, runs with calls of it) whose cost the runtime could not price

    def add_tokens(self, tokens: dict[str, Any] | None) -> None:
        for category, count in (tokens or {}).items():
            self.tokens[category] = self.tokens.get(category, 0) + int(count)

    def view(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "tokens": dict(sorted(self.tokens.items())),
            "cost_usd": round(self.cost_usd, 10),
            "unpriced_runs": self.unpriced_runs,
        }


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def window(start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC: ``end`` defaults to now, ``start`` to 30 days before ``end``. 422 when it is empty or
    longer than 400 days."""
    try:
        end = _utc(end) if end is not None else datetime.now(UTC)
        start = _utc(start) if start is not None else end - DEFAULT_WINDOW
    except OverflowError:  # a date at the calendar's edge (year 1 or 9999)
        raise ApiProblem(status=422, code="usage.invalid_window", detail="'from' or 'to' is out of range.") from None
    if start >= end:
        raise ApiProblem(
            status=422, code="usage.invalid_window", detail="'from' must be before 'to'.", params={"from": _iso(start), "to": _iso(end)}
        )
    if end - start > MAX_WINDOW:
        raise ApiProblem(
            status=422,
            code="usage.invalid_window",
            detail=f"The window spans more than {MAX_WINDOW.days} days; ask for several shorter ones.",
            params={"from": _iso(start), "to": _iso(end), "max_days": MAX_WINDOW.days},
        )
    return start, end


class UsageService:
    def __init__(self, repository: UsageRepository) -> None:
        self.repository = repository

    async def usage(self, *, caller: Caller, start: datetime | None, end: datetime | None, group_by: GroupBy) -> dict[str, Any]:
        begin, finish = window(start, end)
        total = _Tally()
        groups: dict[str | None, _Tally] = {}
        async for row in self.repository.runs_between(caller.id, begin, finish):
            usage = row["usage"] or {}
            priced = usage.get("cost_usd") is not None
            total.runs += 1
            total.add_tokens(usage.get("tokens"))
            total.cost_usd += float(usage["cost_usd"]) if priced else 0.0
            total.unpriced_runs += 0 if priced or not usage.get("by_pipe") else 1
            if group_by == "model":
                _fold_models(groups, usage.get("by_pipe") or [])
                continue
            # by pipe code: None gathers the runs that named none (their bundle's main pipe ran)
            key = _utc(row["created_at"]).date().isoformat() if group_by == "day" else row["pipe_code"]
            tally = groups.setdefault(key, _Tally())
            tally.runs += 1
            tally.add_tokens(usage.get("tokens"))
            tally.cost_usd += float(usage["cost_usd"]) if priced else 0.0
            tally.unpriced_runs += 0 if priced or not usage.get("by_pipe") else 1
        return {
            "from": _iso(begin),
            "to": _iso(finish),
            "group_by": group_by,
            "total": total.view(),
            "groups": [
                {"key": key, **tally.view()} for key, tally in sorted(groups.items(), key=lambda item: (item[0] is None, item[0] or ""))
            ],
        }

    async def active_counts(self) -> dict[str, int]:
        return await self.repository.active_counts()


def _fold_models(groups: dict[str | None, _Tally], records: list[dict[str, Any]]) -> None:
    """One run's inference records into per-model tallies (a run counts once for each model it called)."""
    seen: set[str] = set()
    unpriced: set[str] = set()
    for record in records:
        model = str(record.get("inference_model_name") or "")
        tally = groups.setdefault(model, _Tally())
        if model not in seen:
            seen.add(model)
            tally.runs += 1
        tally.add_tokens(record.get("nb_tokens_by_category"))
        if record.get("cost") is None:
            unpriced.add(model)
        else:
            tally.cost_usd += float(record["cost"])
    for model in unpriced:
        groups[model].unpriced_runs += 1
