"""`pipelex-server keys create | list | revoke`: an operator manages a caller's API keys in the configured database
(DATABASE_URL, or the SQLite file under DATA_DIR), e.g. to mint a caller's first key. Prints JSON on stdout; the
secret (`api_key`) of a created key is printed this once and stored only hashed."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipelex_server.errors import ConfigurationError

if TYPE_CHECKING:  # the service (and the store under it) is imported by `keys` alone, not by every command's parser
    from pipelex_server.key_service import ApiKeyService

CALLER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")  # as api/auth.py accepts caller ids
_CALLER_HELP = "the caller id the key authenticates as ([A-Za-z0-9_-]{1,128}); its runs, files and methods are scoped to it"


def add_parser(commands: Any) -> None:
    keys = commands.add_parser("keys", help="manage callers' API keys (AUTH_MODE=keys) in the configured database")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="mint a key; prints JSON with api_key (shown once)")
    create.add_argument("--caller", required=True, help=_CALLER_HELP)
    create.add_argument("--label", required=True, help="a name for the key, shown in lists")
    expiry = create.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires-at", help="when the key stops working, ISO 8601 with a UTC offset (default: API_KEY_TTL_DAYS, else never)"
    )
    expiry.add_argument("--expires-in-days", type=float, help="the key stops working this many days from now")
    listing = actions.add_parser("list", help="a caller's keys as JSON (never their secrets)")
    listing.add_argument("--caller", required=True, help=_CALLER_HELP)
    revoke = actions.add_parser("revoke", help="revoke one of a caller's keys (it stops at once)")
    revoke.add_argument("--caller", required=True, help=_CALLER_HELP)
    revoke.add_argument("--id", required=True, dest="key_id", help="the key's id (ak_...)")


def _expiry(args: argparse.Namespace) -> datetime | None:
    if args.expires_in_days is not None:
        if args.expires_in_days <= 0:
            raise ConfigurationError("--expires-in-days must be positive")
        return datetime.now(UTC) + timedelta(days=args.expires_in_days)
    if args.expires_at is None:
        return None
    try:
        value = datetime.fromisoformat(args.expires_at.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"--expires-at {args.expires_at!r} is not an ISO 8601 date-time") from None
    if value.tzinfo is None:
        raise ConfigurationError("--expires-at needs a UTC offset (e.g. 2030-01-01T00:00:00Z)")
    if value <= datetime.now(UTC):
        raise ConfigurationError("--expires-at must be in the future")
    return value


def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value is not None else None


def _record(row: dict[str, Any]) -> dict[str, Any]:
    fields = ("id", "caller_id", "label", "prefix", "created_at", "rotated_at", "last_used_at", "expires_at")
    return {name: _when(row.get(name)) if isinstance(row.get(name), datetime) else row.get(name) for name in fields}


async def _with_service(settings: Any, action: Callable[[ApiKeyService], Awaitable[Any]]) -> Any:
    from pipelex_server.key_service import ApiKeyService
    from pipelex_server.store.api_keys import ApiKeyRepository
    from pipelex_server.store.db import make_engine, migrate

    engine = make_engine(settings.resolved_database_url)
    try:
        await migrate(engine)
        return await action(ApiKeyService(settings=settings, repository=ApiKeyRepository(engine)))
    finally:
        await engine.dispose()


def run(args: argparse.Namespace) -> int:
    """Run one `keys` command; the process's exit status (0, or 1 when the caller has no such key or is at its cap)."""
    from pipelex_server.settings import AuthMode, load_settings

    settings = load_settings()
    if not CALLER_ID_RE.match(args.caller):
        raise ConfigurationError("--caller must match [A-Za-z0-9_-]{1,128}")
    if settings.auth_mode is not AuthMode.KEYS:
        print(f"note: AUTH_MODE is {settings.auth_mode.value}; these keys authenticate only with AUTH_MODE=keys", file=sys.stderr)

    if args.keys_command == "create":
        label = args.label.strip()
        if not label or len(label) > 256 or not label.isprintable():
            raise ConfigurationError("--label must be 1 to 256 printable characters")
        expires_at = _expiry(args)
        created = asyncio.run(_with_service(settings, lambda keys: keys.create(args.caller, label, expires_at=expires_at)))
        if created is None:
            print(
                f"error: caller {args.caller!r} already holds API_KEYS_MAX_PER_CALLER={settings.api_keys_max_per_caller} live keys",
                file=sys.stderr,
            )
            return 1
        row, secret = created
        print(json.dumps({"api_key": secret, **_record(row)}, indent=2))
        return 0
    if args.keys_command == "list":
        rows = asyncio.run(_with_service(settings, lambda keys: keys.list(args.caller)))
        print(json.dumps({"keys": [_record(row) for row in rows]}, indent=2))
        return 0
    revoked = asyncio.run(_with_service(settings, lambda keys: keys.revoke(args.caller, args.key_id)))
    print(json.dumps({"id": args.key_id, "revoked": revoked}))
    return 0 if revoked else 1
