"""Publishing a method's draft as its next version: the token check, `unchanged` for a draft equal to the latest
version, the runtime's validation (`refused` with its verdict), then version N+1 as one compare-and-set, so two
concurrent publishers of one draft write one version (the second answers `unchanged`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipelex_server.catalog import problems
from pipelex_server.catalog.service import CatalogService, description_of
from pipelex_server.catalog.views import iso, method_data, version_summary
from pipelex_server.errors import ApiProblem
from pipelex_server.store.common import utcnow

if TYPE_CHECKING:
    from pipelex_server.runs.model import Caller

PUBLISHED, UNCHANGED, REFUSED = "published", "unchanged", "refused"
MAX_ATTEMPTS = 5


@dataclass
class PublishOutcome:
    outcome: str
    method: dict[str, Any]  # MethodData
    version: dict[str, Any] | None = None  # MethodVersionSummary
    reason: str | None = None  # invalid, not_runnable
    message: str | None = None
    verdict: dict[str, Any] = field(default_factory=dict)  # the engine's validation verdict, for a refusal


class Publisher:
    def __init__(self, catalog: CatalogService) -> None:
        self.catalog = catalog
        self.repository = catalog.repository
        self.engine = catalog.engine

    async def _unchanged(self, row: dict[str, Any]) -> PublishOutcome | None:
        """`unchanged` when the draft is the latest version's tree (by digest)."""
        latest = await self.catalog._latest(row)
        if latest is not None and latest["tree_digest"] == row["draft_digest"]:
            return PublishOutcome(UNCHANGED, method_data(row, latest), version_summary(latest))
        return None

    async def publish(self, caller: Caller, method_id: str, token: Any) -> PublishOutcome:
        if not isinstance(token, str):
            raise problems.invalid("expected_draft_updated_at", "`expected_draft_updated_at` (the draft token you last saw) is required.")
        row = await self.catalog.live(caller, method_id)
        if token != iso(row["updated_at"]):
            raise problems.update_conflict(method_id)
        if not row["draft"] or not any(path.endswith(".mthds") for path in row["draft"]):
            raise ApiProblem(
                status=422,
                code="method.package_invalid",
                detail=f"The draft of the method {method_id!r} holds no .mthds file: there is nothing to publish.",
                params={"reason": "no_bundle", "method_id": method_id},
            )
        unchanged = await self._unchanged(row)
        if unchanged is not None:
            return unchanged
        entries = row["draft"]
        tree = await self.engine.stored_method_tree({path: entry["sha256"] for path, entry in entries.items()}, scope=caller.scope)
        await self.engine.wait_ready()
        verdict = await self.engine.validate(mthds_contents=None, pipe_code=None, tree=tree)
        if verdict.get("fault") and verdict.get("problem"):
            raise ApiProblem.from_document(verdict["problem"])  # no verdict on the draft: the runtime's own failure
        if not verdict.get("success") or not verdict.get("is_runnable", True):
            reason = "invalid" if not verdict.get("success") else "not_runnable"
            message = str(verdict.get("message") or "") or "The draft does not validate."
            if reason == "not_runnable":
                message = "The draft is valid but does not run yet (it has pending signatures)."
            return PublishOutcome(REFUSED, await self.catalog.data(row), reason=reason, message=message, verdict=verdict)
        crate = await self.engine.crate_fingerprint(tree)  # the version's meaning, as /v1/resolve fingerprints it
        return await self._write(caller, row, tree_digest=row["draft_digest"], description=description_of(tree), crate=crate)

    async def _write(
        self, caller: Caller, row: dict[str, Any], *, tree_digest: str, description: str | None, crate: str | None
    ) -> PublishOutcome:
        method_id, token, draft = row["id"], row["updated_at"], row["draft"]
        for _attempt in range(MAX_ATTEMPTS):
            number = (row["latest_version"] or 0) + 1
            version = {
                "version": number,
                "tree": draft,
                "tree_digest": tree_digest,
                "description": description,
                "runner_version": self.engine.versions().get("runtime_version"),
                "crate_fingerprint": crate,
                "published_at": utcnow(),
                "published_by": caller.id,
            }
            if await self.repository.publish(method_id, version, token=token, previous=row["latest_version"]):
                written = {**row, "latest_version": number}
                return PublishOutcome(PUBLISHED, method_data(written, version), version_summary(version))
            # another publish or a draft write landed first: read again and judge what is there now
            row = await self.catalog.live(caller, method_id)
            unchanged = await self._unchanged(row)
            if unchanged is not None:
                return unchanged
            if row["updated_at"] != token:
                raise problems.update_conflict(method_id)
        raise problems.busy(method_id)
