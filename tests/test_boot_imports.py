"""What a boot does not pay for: the default configuration's server imports none of the optional stacks (Temporal, S3
SDKs, the OpenTelemetry SDK and exporters, Alembic, PostgreSQL drivers) nor the runtime before its background boot;
a new SQLite store is created without Alembic; the `keys` command's parser imports no store; the collector is off from
a booting command's start to the runtime's warm end; the problem responses reference one schema the document holds."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest

from pipelex_server import boot_gc

NOT_AT_BOOT = (
    "temporalio",
    "boto3",
    "botocore",
    "aiobotocore",
    "alembic",
    "sqlalchemy.orm",  # the store uses the async engine alone (store/async_engine.py)
    "asyncpg",
    "psycopg",
    "opentelemetry.sdk",
    "opentelemetry.exporter",
    "pipelex",
    "openai",
    "pipelex_server.temporal",
)

PROBE = """
import json, sys, tempfile
from pipelex_server import cli, composition, server
from pipelex_server.app import create_app
from pipelex_server.settings import Settings
create_app(Settings(data_dir=tempfile.mkdtemp()))
print(json.dumps(sorted(sys.modules)))
"""


def _modules_after(code: str, env_extra: dict[str, str] | None = None) -> set[str]:
    import os

    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "EXECUTION_MODE", "STORAGE_BACKEND"))}
    env.update({"DO_NOT_TRACK": "1", "AUTH_MODE": "api_key", "API_KEY": "k", **(env_extra or {})})
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def _loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(module.startswith(name + ".") for module in modules)


def test_the_default_app_imports_no_optional_stack_and_not_the_runtime():
    modules = _modules_after(PROBE)
    assert "fastapi" in modules and "pipelex_server.app" in modules  # the probe did import the app
    assert [name for name in NOT_AT_BOOT if _loaded(modules, name)] == []


def test_a_new_sqlite_store_is_created_without_importing_alembic(tmp_path):
    code = (
        "import asyncio, json, sys\n"
        "from pipelex_server.store.db import make_engine, migrate\n"
        "async def main():\n"
        f"    engine = make_engine('sqlite+aiosqlite:///{tmp_path / 'new.sqlite3'}')\n"
        "    await migrate(engine)\n"
        "    await engine.dispose()\n"
        "asyncio.run(main())\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    modules = _modules_after(code)
    assert "pipelex_server.store.db" in modules
    assert not _loaded(modules, "alembic") and not _loaded(modules, "mako")


def test_the_command_line_parser_imports_no_store():
    modules = _modules_after("import json, sys\nimport pipelex_server.cli\nprint(json.dumps(sorted(sys.modules)))")
    assert not _loaded(modules, "sqlalchemy")
    assert not _loaded(modules, "pipelex_server.store")


def test_a_command_paused_collector_comes_back_when_the_boot_ends():
    assert gc.isenabled()
    try:
        boot_gc.pause_for_boot()
        assert not gc.isenabled()
        with boot_gc.collector_off():
            assert not gc.isenabled()
        assert gc.isenabled()
    finally:
        gc.enable()


def test_a_collector_off_before_the_boot_stays_off_after_it():
    gc.disable()
    try:
        with boot_gc.collector_off():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_the_problem_responses_reference_the_problem_schema_the_document_holds(tmp_path):
    from pipelex_server.app import create_app
    from pipelex_server.settings import Settings

    document = create_app(Settings(data_dir=tmp_path)).openapi()
    problem = document["components"]["schemas"]["Problem"]
    assert {"type", "title", "status", "detail", "code"} <= set(problem["required"])
    answer = document["paths"]["/v1/execute"]["post"]["responses"]["422"]
    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
    assert "application/problem+json" in answer["content"]


def test_a_serve_refused_for_its_configuration_leaves_the_collector_on(monkeypatch, tmp_path, capsys):
    from pipelex_server.cli import main

    monkeypatch.setenv("AUTH_MODE", "api_key")
    monkeypatch.delenv("API_KEY", raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exited:
        main(["serve"])
    assert exited.value.code == 2 and "API_KEY" in capsys.readouterr().err
    assert gc.isenabled()
