"""Settings from the environment."""

from pipelex_server.settings import Settings


def test_empty_variables_count_as_unset(monkeypatch, tmp_path):
    for name in ("RUN_TIMEOUT_SECONDS", "RUN_RETENTION_DAYS", "PIPELEX_CONFIG_DIR", "COMPLETION_CALLBACK_SECRET", "DATABASE_URL"):
        monkeypatch.setenv(name, "")
    settings = Settings(data_dir=tmp_path)
    assert settings.run_timeout_seconds == 3600 and settings.run_retention_days is None
    assert settings.pipelex_config_dir is None and settings.completion_callback_secret is None
    assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")


def test_lists_come_comma_separated(monkeypatch, tmp_path):
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("LIBRARY_DIRS", "/srv/a,/srv/b")
    settings = Settings(data_dir=tmp_path)
    assert settings.cors_allow_origins == ["https://a.example", "https://b.example"]
    assert [str(path) for path in settings.library_dirs] == ["/srv/a", "/srv/b"]


def test_temporal_mode_needs_an_address(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="TEMPORAL_ADDRESS"):
        Settings(data_dir=tmp_path, execution_mode="temporal")


def test_temporal_mode_refuses_one_host_parts_unless_confirmed(tmp_path):
    import pytest

    base = {"data_dir": tmp_path, "execution_mode": "temporal", "temporal_address": "127.0.0.1:7233"}
    with pytest.raises(ValueError, match=r"SQLite run store.*local object storage.*SINGLE_HOST"):
        Settings(**base)
    with pytest.raises(ValueError, match="local object storage"):
        Settings(**base, database_url="postgresql+asyncpg://db/pipelex")
    with pytest.raises(ValueError, match="SQLite run store"):
        Settings(**base, storage_backend="s3", s3_bucket="b")
    with pytest.raises(ValueError, match="in-memory"):
        Settings(**base, single_host=True, database_url="sqlite+aiosqlite://")
    assert Settings(**base, single_host=True).is_temporal
    several_hosts = Settings(**base, database_url="postgresql+asyncpg://db/pipelex", storage_backend="s3", s3_bucket="b")
    assert several_hosts.is_temporal and not several_hosts.temporal_uses_tls
    assert Settings(**base, single_host=True, temporal_api_key="k").temporal_uses_tls


def test_s3_storage_needs_a_bucket(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="S3_BUCKET"):
        Settings(data_dir=tmp_path, storage_backend="s3")


def test_the_workflow_module_never_loads_the_pipelex_runtime():
    """Workflow code runs in Temporal's deterministic sandbox: it must not import the runtime (activities do)."""
    import subprocess
    import sys

    code = (
        "import sys, pipelex_server.temporal.workflows\n"
        "loaded = sorted(m for m in sys.modules if m == 'pipelex' or m.startswith('pipelex.'))\n"
        "assert not loaded, loaded\n"
        "assert 'pipelex_server.engine.runtime' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_weak_whsec_callback_secrets_stop_the_boot(tmp_path):
    import base64

    import pytest

    for secret, message in (
        ("whsec_", "empty|decodes to 0 bytes"),
        ("whsec_not base64!!", "not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "decodes to 5 bytes"),
        ("   ", "empty"),
    ):
        with pytest.raises(ValueError, match=message):
            Settings(data_dir=tmp_path, completion_callback_secret=secret)
    strong = "whsec_" + base64.b64encode(b"k" * 16).decode()
    assert Settings(data_dir=tmp_path, completion_callback_secret=strong).completion_callback_secret is not None
    assert Settings(data_dir=tmp_path, completion_callback_secret="plain-secret").completion_callback_secret is not None
