"""Settings from the environment."""

from pipelex_server.settings import Settings


def test_empty_variables_count_as_unset(monkeypatch, tmp_path):
    for name in ("RUN_TIMEOUT_SECONDS", "RUN_RETENTION_DAYS", "PIPELEX_CONFIG_DIR", "COMPLETION_CALLBACK_SECRET", "DATABASE_URL"):
        monkeypatch.setenv(name, "")
    settings = Settings(data_dir=tmp_path)
    assert settings.run_timeout_seconds is None and settings.run_retention_days is None
    assert settings.pipelex_config_dir is None and settings.completion_callback_secret is None
    assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")


def test_lists_come_comma_separated(monkeypatch, tmp_path):
    monkeypatch.setenv("CORS_ALLOW_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("LIBRARY_DIRS", "/srv/a,/srv/b")
    settings = Settings(data_dir=tmp_path)
    assert settings.cors_allow_origins == ["https://a.example", "https://b.example"]
    assert [str(path) for path in settings.library_dirs] == ["/srv/a", "/srv/b"]
