"""Server settings: one pydantic-settings model, read from the environment, validated at boot."""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipelex_server.errors import ConfigurationError


class AuthMode(StrEnum):
    NONE = "none"
    API_KEY = "api_key"
    JWT = "jwt"
    KEYS = "keys"  # per-caller API keys stored hashed in the database (docs/api-keys.md)


class ExecutionMode(StrEnum):
    INPROCESS = "inprocess"
    TEMPORAL = "temporal"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class StorageBackend(StrEnum):
    LOCAL = "local"
    S3 = "s3"


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the server. Built explicitly by tests; from the environment by the CLI."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False, env_ignore_empty=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=1, le=65535)

    auth_mode: AuthMode = AuthMode.NONE
    api_key: SecretStr | None = None
    jwt_secret_key: SecretStr | None = None
    jwt_require_exp: bool = True
    trust_forwarded_identity_headers: bool = False
    # AUTH_MODE=keys (docs/api-keys.md): the most live keys a caller may hold, and the default lifetime of a new key
    api_keys_max_per_caller: int = Field(default=20, ge=1, le=10000)
    api_key_ttl_days: float | None = Field(default=None, gt=0)

    completion_callback_secret: SecretStr | None = None
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # AUTH_MODE=none: the Host names a request may carry (DNS-rebinding guard); empty = loopback names + bind address
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_request_body_mib: float = Field(default=16.0, gt=0)
    playground_enabled: bool = True  # the browser page at /playground (docs/playground.md)

    data_dir: Path = Path("./data")
    database_url: str | None = None

    execution_mode: ExecutionMode = ExecutionMode.INPROCESS
    max_concurrent_runs: int = Field(default=64, ge=1)
    # in-process: a run not started yet waits up to this long while /start acks are pending (runs/priority.py); 0: never
    ack_priority_max_wait_seconds: float = Field(default=1.0, ge=0)
    # ... and goes only once no ack has been pending for this long (one client's back-to-back starts)
    ack_priority_settle_ms: float = Field(default=5.0, ge=0, le=1000)
    run_timeout_seconds: float = Field(default=3600.0, gt=0)
    max_active_runs_per_caller: int = Field(default=256, ge=1)
    sse_max_streams_per_caller: int = Field(default=256, ge=1)  # one per run a caller may have active
    ready_wait_seconds: float = Field(default=30.0, ge=0)
    lease_seconds: float = Field(default=30.0, gt=1)

    temporal_address: str | None = None
    temporal_namespace: str = "default"
    temporal_task_queue: str = "pipelex-server"
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool | None = None  # default: on when TEMPORAL_API_KEY is set (Temporal Cloud)
    temporal_heartbeat_timeout_seconds: float = Field(default=30.0, ge=1)
    temporal_max_attempts: int = Field(default=5, ge=1, le=100)
    single_host: bool = False

    storage_backend: StorageBackend = StorageBackend.LOCAL
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    upload_max_mib: float = Field(default=64.0, gt=0)
    fetch_max_mib: float = Field(default=32.0, gt=0)
    fetch_timeout_seconds: float = Field(default=30.0, gt=0)
    fetch_max_urls: int = Field(default=64, ge=0)
    fetch_max_concurrency: int = Field(default=16, ge=1)
    fetch_max_request_mib: float = Field(default=128.0, gt=0)
    dns_timeout_seconds: float = Field(default=5.0, gt=0)
    dns_max_concurrency: int = Field(default=8, ge=1)

    library_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    pipelex_config_dir: Path | None = None

    callback_allow_private_hosts: bool = False
    fetch_allow_private_hosts: bool = False
    callback_max_attempts: int = Field(default=8, ge=1, le=20)
    callback_backoff_seconds: float = Field(default=30.0, gt=0)
    callback_timeout_seconds: float = Field(default=10.0, gt=0)
    callback_max_concurrency: int = Field(default=16, ge=1)
    callback_max_redeliveries: int = Field(default=5, ge=0)
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    output_inline_max_bytes: int = Field(default=1024 * 1024, ge=0)
    # method tree limits: the official server's names and defaults (docs/configuration.md)
    max_method_tree_files: int = Field(default=1000, ge=1)
    max_method_tree_file_kib: int = Field(default=32 * 1024, ge=1)
    max_method_tree_total_kib: int = Field(default=64 * 1024, ge=1)
    # bundle_b64 archives, resources, dependency trees: the official server's names and defaults (docs/configuration.md)
    max_bundle_files: int = Field(default=128, ge=1)
    max_bundle_total_kib: int = Field(default=8 * 1024, ge=1)
    max_resources_per_request: int = Field(default=32, ge=1)
    max_resource_file_kib: int = Field(default=5 * 1024, ge=1)
    max_resources_total_kib: int = Field(default=10 * 1024, ge=1)
    max_method_dependencies: int = Field(default=32, ge=0)
    max_method_request_total_kib: int = Field(default=128 * 1024, ge=1)
    # method_ref: git fetches under a deadline into a SHA-keyed cache (docs/configuration.md, "Published methods")
    method_fetch_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    method_cache_dir: Path | None = None  # unset: DATA_DIR/method-cache
    max_method_cache_clones: int = Field(default=64, ge=1)
    max_method_cache_total_kib: int = Field(default=524288, ge=1)
    max_method_cache_age_hours: float = Field(default=24, gt=0)
    # the blob routes' upload targets (docs/protocol.md, "Blobs"): where clients reach us, the key that signs them
    public_base_url: str | None = None
    blob_upload_signing_key: SecretStr | None = None  # unset: a random key per process
    blob_upload_url_ttl_seconds: int = Field(default=3600, ge=1, le=7 * 24 * 3600)
    # the platform's storage links (docs/files.md): their lifetime, and the key that signs local links and list cursors
    storage_link_ttl_seconds: int = Field(default=900, ge=1, le=7 * 24 * 3600)
    storage_link_signing_key: SecretStr | None = None  # unset: derived from BLOB_UPLOAD_SIGNING_KEY, else random per process
    run_retention_days: float | None = Field(default=None, gt=0)

    # observability (docs/observability.md): logs as JSON or text, payloads in logs, Prometheus metrics and their access
    log_format: LogFormat = LogFormat.TEXT
    log_payloads: bool = False
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None  # unset: /metrics is open with AUTH_MODE=none, loopback clients only otherwise
    metrics_port: int | None = Field(default=None, ge=1, le=65535)  # `pipelex-server worker`: serve /metrics on this port
    metrics_host: str = "127.0.0.1"  # the worker's metrics endpoint's bind address (0.0.0.0 in a container)

    openai_base_url: str | None = None
    runtime_log_level: str = Field(default="WARNING", pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")
    validate_cache_size: int = Field(default=512, ge=0)
    validate_cache_max_mib: float = Field(default=64.0, ge=0)
    template_cache_max_mib: float = Field(default=32.0, ge=0)
    # loaded-library cache: methods' validated crates by digest (engine/library_cache.py)
    library_cache_size: int = Field(default=256, ge=0)
    library_cache_max_mib: float = Field(default=32.0, ge=0)
    # loaded libraries kept between successful runs of a cached method, lent to one run at a time (engine/library_pool.py)
    library_pool_size: int = Field(default=32, ge=0)
    warm_up: bool = True
    # test-only hooks (never set in production): slow the runtime boot down, or make it fail, to test warm-up
    pipelex_server_test_boot_delay_seconds: float = Field(default=0.0, ge=0)
    pipelex_server_test_boot_failure: str | None = None

    @field_validator("cors_allow_origins", "library_dirs", "allowed_hosts", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("auth_mode", mode="before")
    @classmethod
    def _auth_mode(cls, value: object) -> object:
        if isinstance(value, str):
            lowered = value.strip().lower()
            allowed = {mode.value for mode in AuthMode}
            if lowered not in allowed:
                raise ConfigurationError(f"AUTH_MODE={value!r} is not one of {sorted(allowed)}")
            return lowered
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.auth_mode is AuthMode.API_KEY and not (self.api_key and self.api_key.get_secret_value()):
            raise ConfigurationError("AUTH_MODE=api_key needs API_KEY")
        if self.auth_mode is AuthMode.JWT and not (self.jwt_secret_key and self.jwt_secret_key.get_secret_value()):
            raise ConfigurationError("AUTH_MODE=jwt needs JWT_SECRET_KEY")
        if self.auth_mode is AuthMode.KEYS and self.api_key is not None and len(self.api_key.get_secret_value()) < KEYS_BOOTSTRAP_MIN_CHARS:
            raise ConfigurationError(
                f"AUTH_MODE=keys: the bootstrap API_KEY mints keys for any caller; use at least {KEYS_BOOTSTRAP_MIN_CHARS} random characters"
            )
        if self.trust_forwarded_identity_headers and self.auth_mode is not AuthMode.NONE:
            raise ConfigurationError("TRUST_FORWARDED_IDENTITY_HEADERS=true is only allowed with AUTH_MODE=none")
        if self.execution_mode is ExecutionMode.TEMPORAL:
            self._check_temporal()
        if self.storage_backend is StorageBackend.S3 and not self.s3_bucket:
            raise ConfigurationError("STORAGE_BACKEND=s3 needs S3_BUCKET (and S3_ENDPOINT_URL for a non-AWS S3-compatible server)")
        if self.completion_callback_secret is not None:
            _check_callback_secret(self.completion_callback_secret.get_secret_value())
        _check_blob_upload_settings(self.public_base_url, self.blob_upload_signing_key)
        return self

    @property
    def max_request_body_bytes(self) -> int:
        return int(self.max_request_body_mib * 1024 * 1024)

    def _check_temporal(self) -> None:
        """Refuse a Temporal deployment that cannot work: every process must reach the same store and storage."""
        if not self.temporal_address:
            raise ConfigurationError("EXECUTION_MODE=temporal needs TEMPORAL_ADDRESS (host:port of the Temporal frontend)")
        url = self.resolved_database_url
        sqlite_path = url.split("://", 1)[-1].split("?", 1)[0] if url.startswith("sqlite") else None
        if ":memory:" in url or (sqlite_path is not None and not sqlite_path.strip("/")):
            raise ConfigurationError("EXECUTION_MODE=temporal cannot use an in-memory database: API and workers must share the run store")
        local_parts = []
        if url.startswith("sqlite"):
            local_parts.append("a SQLite run store (DATABASE_URL)")
        if self.storage_backend is StorageBackend.LOCAL:
            local_parts.append("local object storage (STORAGE_BACKEND=local)")
        if local_parts and not self.single_host:
            raise ConfigurationError(
                f"EXECUTION_MODE=temporal with {' and '.join(local_parts)} only works when the API and every worker run on one "
                "host and share DATA_DIR. Use PostgreSQL (DATABASE_URL=postgresql+asyncpg://...) and STORAGE_BACKEND=s3 for "
                "several hosts, or set SINGLE_HOST=true to confirm a one-host deployment."
            )

    @property
    def temporal_uses_tls(self) -> bool:
        if self.temporal_tls is not None:
            return self.temporal_tls
        return bool(self.temporal_api_key and self.temporal_api_key.get_secret_value())

    @property
    def is_temporal(self) -> bool:
        return self.execution_mode is ExecutionMode.TEMPORAL

    @property
    def max_method_tree_file_bytes(self) -> int:
        return self.max_method_tree_file_kib * 1024

    @property
    def max_method_tree_total_bytes(self) -> int:
        return self.max_method_tree_total_kib * 1024

    @property
    def resolved_method_cache_dir(self) -> Path:
        return self.method_cache_dir or self.data_dir / "method-cache"

    @property
    def upload_max_bytes(self) -> int:
        return int(self.upload_max_mib * 1024 * 1024)

    @property
    def fetch_max_bytes(self) -> int:
        return int(self.fetch_max_mib * 1024 * 1024)

    @property
    def fetch_max_request_bytes(self) -> int:
        return int(self.fetch_max_request_mib * 1024 * 1024)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'pipelex-server.sqlite3').resolve()}"


WHSEC_MIN_KEY_BYTES = 16
KEYS_BOOTSTRAP_MIN_CHARS = 24


def _check_callback_secret(secret: str) -> None:
    """A secret that would sign with a weak or empty key stops the boot (a ``whsec_`` key is base64 of >= 16 bytes)."""
    if not secret.strip():
        raise ConfigurationError("COMPLETION_CALLBACK_SECRET is set but empty")
    if not secret.startswith("whsec_"):
        return
    encoded = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigurationError("COMPLETION_CALLBACK_SECRET starts with whsec_ but the rest is not base64") from None
    if len(key) < WHSEC_MIN_KEY_BYTES:
        raise ConfigurationError(
            f"COMPLETION_CALLBACK_SECRET: the whsec_ key decodes to {len(key)} bytes; at least {WHSEC_MIN_KEY_BYTES} are needed "
            "(generate one with: python -c \"import base64,os;print('whsec_'+base64.b64encode(os.urandom(32)).decode())\")"
        )


BLOB_UPLOAD_KEY_MIN_CHARS = 32


def _check_blob_upload_settings(public_base_url: str | None, signing_key: SecretStr | None) -> None:
    """PUBLIC_BASE_URL must be an absolute http(s) URL (upload targets start with it); a signing key must not be weak."""
    if public_base_url is not None:
        parts = urlsplit(public_base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise ConfigurationError(
                f"PUBLIC_BASE_URL={public_base_url!r} must be an absolute http or https URL without a query or fragment, "
                "such as https://runner.example.com or https://example.com/pipelex"
            )
    if signing_key is not None and len(signing_key.get_secret_value().strip()) < BLOB_UPLOAD_KEY_MIN_CHARS:
        raise ConfigurationError(
            f"BLOB_UPLOAD_SIGNING_KEY must hold at least {BLOB_UPLOAD_KEY_MIN_CHARS} characters "
            '(generate one with: python -c "import secrets;print(secrets.token_urlsafe(32))")'
        )


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ConfigurationError:
        raise
    except ValueError as exc:  # pydantic ValidationError, possibly wrapping our ConfigurationError
        raise ConfigurationError(str(exc)) from exc
