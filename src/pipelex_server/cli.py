"""`pipelex-server serve | worker | migrate | keys`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pipelex_server import boot_gc, key_commands
from pipelex_server.errors import ConfigurationError


def _migrate() -> None:
    from pipelex_server.settings import load_settings
    from pipelex_server.store.db import make_engine, migrate

    settings = load_settings()

    async def run() -> None:
        engine = make_engine(settings.resolved_database_url)
        try:
            await migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print("migrations applied")


def _configure_logging() -> None:
    """Our own handler for our loggers: the pipelex runtime installs its own (JSON) handler on the root logger."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("pipelex_server", "alembic"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO if name == "pipelex_server" else logging.WARNING)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, which a container's cpuset narrows), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def workers_argument(value: str) -> int:
    """``--workers``: a positive count, or ``auto`` for one process per usable core."""
    if value.strip().lower() == "auto":
        return usable_cores()
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'auto', got {value!r}")
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pipelex-server", description="REST API server for Pipelex pipelines")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", default=None, help="bind address (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default: PORT or 8081)")
    serve.add_argument(
        "--workers", type=workers_argument, default=1, help="server processes: a number, or auto for one per CPU core (default 1)"
    )
    serve.add_argument("--log-level", default="info")
    commands.add_parser("worker", help="run a Temporal worker (EXECUTION_MODE=temporal)")
    commands.add_parser("migrate", help="apply the run-store migrations")
    key_commands.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "worker" or (args.command == "serve" and args.workers == 1):
        # before the heavy imports; the runtime's boot in this process turns it on again (boot_gc.py). Not in the
        # supervisor of `--workers N`, which boots no runtime (each worker's runtime boot turns it off for itself)
        boot_gc.pause_for_boot()
    _configure_logging()
    from pipelex_server.observability import logs, metrics

    try:
        if args.command == "serve":
            from pipelex_server.engine.home import require_clean_working_directory
            from pipelex_server.server import serve as run_server
            from pipelex_server.settings import load_settings

            overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
            settings = load_settings(**overrides)  # fail fast on bad configuration, before uvicorn starts
            log_config = logs.configure(log_format=settings.log_format.value, payloads=settings.log_payloads, level=args.log_level)
            if settings.metrics_enabled:  # set before the workers start: every worker writes there, a scrape sums them
                metrics.prepare_multiprocess(args.workers)
            require_clean_working_directory(Path.cwd())
            from pipelex_server.composition import preflight

            asyncio.run(preflight(settings))
            run_server(host=settings.host, port=settings.port, workers=args.workers, log_level=args.log_level, log_config=log_config)
        elif args.command == "migrate":
            _migrate()
        elif args.command == "keys":
            sys.exit(key_commands.run(args))
        else:
            from pipelex_server.engine.home import require_clean_working_directory
            from pipelex_server.settings import load_settings
            from pipelex_server.temporal.worker import main_worker

            settings = load_settings()
            logs.configure(log_format=settings.log_format.value, payloads=settings.log_payloads)
            require_clean_working_directory(Path.cwd())
            main_worker(settings)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    finally:
        boot_gc.resume()  # a command that ended before its runtime's boot (a refused configuration) leaves it on


if __name__ == "__main__":
    main()
