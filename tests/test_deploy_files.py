"""The deployment files: Dockerfile, .dockerignore and docker-compose.yml (with its deploy/ config).

No image is built and no container runs here: the files are parsed and checked for what matters to the server (its
settings, its roles, its storage), and the compose file is validated by `docker-compose config` when the binary
exists on the machine."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelex_server.engine.home import BACKEND_CREDENTIALS
from pipelex_server.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

SERVER_ROLES = ("api", "worker")
# Variables the server reads that are not Settings fields: provider credentials and the S3 client's keys.
OTHER_SERVER_VARIABLES = {name for names in BACKEND_CREDENTIALS.values() for name in names} | {
    "OPENAI_BASE_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
}
PASS_THROUGH = (
    "AUTH_MODE",
    "API_KEY",
    "JWT_SECRET_KEY",
    "COMPLETION_CALLBACK_SECRET",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "GOOGLE_API_KEY",
    "MISTRAL_API_KEY",
)
REQUIRED_COMPOSE_ENV = {"AWS_ACCESS_KEY_ID": "test-access-key", "AWS_SECRET_ACCESS_KEY": "test-secret-key"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _image_of(service: dict[str, Any]) -> str:
    return str(service.get("image", ""))


def _service_host(url: str) -> str:
    match = re.match(r"^[a-z0-9+]+://(?:[^@/]*@)?([^:/]+)", url)
    assert match, url
    return match.group(1)


# -- docker-compose.yml ------------------------------------------------------------------------------------------------


def test_compose_has_the_stack(services: dict[str, dict[str, Any]]) -> None:
    assert {"api", "worker", "postgres", "temporal", "temporal-db", "s3"} <= set(services)


def test_api_and_worker_run_the_same_image(services: dict[str, dict[str, Any]]) -> None:
    api, worker = services["api"], services["worker"]
    assert _image_of(api) and _image_of(api) == _image_of(worker)
    assert api.get("build") == worker.get("build")
    assert api["build"]["context"] == "."
    assert api["command"] == ["pipelex-server", "serve", "--host", "0.0.0.0", "--port", "8081"]
    assert worker["command"] == ["pipelex-server", "worker"]
    assert _environment(api) == _environment(worker)


def _probed_paths(command: str) -> list[str]:
    """The server paths a healthcheck command requests."""
    return re.findall(r"http://127\.0\.0\.1:8081(/[A-Za-z0-9_/.-]*)", command)


def test_api_is_published_on_8081_with_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    assert any(str(port).endswith(":8081") for port in api["ports"])
    assert "8081/health" in " ".join(api["healthcheck"]["test"])
    assert api["restart"] == "unless-stopped"


def test_api_healthcheck_probes_readiness(services: dict[str, dict[str, Any]], runtime_stage: list[tuple[str, str]]) -> None:
    # /health is 200 as soon as the process serves, even while the runtime boots or after its boot failed
    test = services["api"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    assert _probed_paths(" ".join(test)) == ["/health/ready"]
    # the same command as the image's own HEALTHCHECK, so the two cannot drift apart
    healthcheck = next(args for keyword, args in runtime_stage if keyword == "HEALTHCHECK")
    assert json.loads(healthcheck.split(" CMD ", 1)[1]) == test[1:]


def test_worker_is_scalable(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert "ports" not in worker
    assert "container_name" not in worker
    assert worker["healthcheck"] == {"disable": True}  # the image's HTTP healthcheck means nothing for a worker
    assert worker["restart"] == "unless-stopped"
    grace = re.fullmatch(r"(\d+)s", str(worker["stop_grace_period"]))
    assert grace and int(grace.group(1)) >= 30


def test_server_environment_names_are_known(services: dict[str, dict[str, Any]]) -> None:
    fields = {name.upper() for name in Settings.model_fields}
    for role in SERVER_ROLES:
        unknown = sorted(name for name in _environment(services[role]) if name.upper() not in fields | OTHER_SERVER_VARIABLES)
        assert not unknown, f"{role}: not a Settings field nor a known provider/AWS variable: {unknown}"


def test_pass_through_variables_stay_empty_when_unset(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["api"])
    for name in PASS_THROUGH:
        assert env.get(name) == f"${{{name}:-}}", name
    for name in REQUIRED_COMPOSE_ENV:
        assert env[name].startswith(f"${{{name}:?"), name


def test_execution_is_temporal_on_the_bundled_server(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["api"])
    assert env["EXECUTION_MODE"] == "temporal"
    host, _, port = env["TEMPORAL_ADDRESS"].partition(":")
    assert host == "temporal" and port == "7233"
    assert env["TEMPORAL_TASK_QUEUE"] == "pipelex-server"
    temporal = _environment(services["temporal"])
    assert env["TEMPORAL_NAMESPACE"] == temporal.get("DEFAULT_NAMESPACE", "default")
    assert "temporalio/auto-setup:1.2" in _image_of(services["temporal"])


def test_run_store_is_postgresql(services: dict[str, dict[str, Any]]) -> None:
    url = _environment(services["api"])["DATABASE_URL"]
    assert url.startswith("postgresql+asyncpg://")
    store = services[_service_host(url)]
    assert _image_of(store).startswith("postgres:")
    user, password = re.match(r"^[^:]+://([^:]+):([^@]+)@", url).groups()  # type: ignore[union-attr]
    store_env = _environment(store)
    assert (store_env["POSTGRES_USER"], store_env["POSTGRES_PASSWORD"]) == (user, password)
    assert url.rsplit("/", 1)[1] == store_env["POSTGRES_DB"]


def test_temporal_has_its_own_database(services: dict[str, dict[str, Any]]) -> None:
    run_store = _service_host(_environment(services["api"])["DATABASE_URL"])
    temporal_env = _environment(services["temporal"])
    assert temporal_env["DB"] == "postgres12"
    temporal_db = temporal_env["POSTGRES_SEEDS"]
    assert temporal_db != run_store
    assert _image_of(services[temporal_db]).startswith("postgres:")
    assert services["temporal"]["depends_on"][temporal_db]["condition"] == "service_healthy"

    def data_volumes(name: str) -> set[str]:
        return {str(volume).split(":", 1)[0] for volume in services[name].get("volumes", [])}

    assert data_volumes(temporal_db) and not data_volumes(temporal_db) & data_volumes(run_store)


def test_temporal_dynamic_config_is_mounted(services: dict[str, dict[str, Any]]) -> None:
    temporal = services["temporal"]
    config_path = _environment(temporal)["DYNAMIC_CONFIG_FILE_PATH"]  # relative to /etc/temporal
    mounts = {target: source for source, target, *_ in (str(volume).split(":") for volume in temporal["volumes"])}
    source = mounts["/etc/temporal/config/dynamicconfig"]
    dynamic_config = REPO_ROOT / source / Path(config_path).name
    assert config_path.startswith("config/dynamicconfig/")
    assert isinstance(yaml.safe_load(dynamic_config.read_text()), dict)


def test_storage_is_s3_on_the_bundled_server(services: dict[str, dict[str, Any]]) -> None:
    env = _environment(services["api"])
    assert env["STORAGE_BACKEND"] == "s3"
    assert env["S3_BUCKET"] and env["S3_REGION"]
    assert _service_host(env["S3_ENDPOINT_URL"]) == "s3"
    s3 = services["s3"]
    assert "seaweedfs:" in _image_of(s3) and not _image_of(s3).endswith(":latest")
    s3_env = _environment(s3)
    for name in REQUIRED_COMPOSE_ENV:
        assert s3_env[name] == env[name]  # the server signs with the keys the S3 server was given
    assert _environment(services["s3-init"])["S3_BUCKET"] == env["S3_BUCKET"]
    assert services["api"]["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"


def test_dependencies_wait_for_health(services: dict[str, dict[str, Any]]) -> None:
    for role in SERVER_ROLES:
        depends_on = services[role]["depends_on"]
        for name in ("postgres", "temporal", "s3"):
            assert depends_on[name]["condition"] == "service_healthy", (role, name)
            assert services[name]["healthcheck"]["test"], name
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, (name, dependency)


def test_stateful_services_use_named_volumes(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    for name in ("postgres", "temporal-db", "s3"):
        sources = {str(volume).split(":", 1)[0] for volume in services[name]["volumes"]}
        assert sources and sources <= declared, name


# -- Dockerfile and .dockerignore ----------------------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return _instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime_stage(dockerfile: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(index for index, (keyword, _) in enumerate(dockerfile) if keyword == "FROM")
    return dockerfile[last_from:]


def test_dockerfile_is_multi_stage_on_python_311_slim(dockerfile: list[tuple[str, str]]) -> None:
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in dockerfile
    stages = [args for keyword, args in dockerfile if keyword == "FROM"]
    assert len(stages) >= 2 and all(stage.startswith("${PYTHON_IMAGE}") for stage in stages)


def test_dockerfile_installs_from_the_lock_without_dev_extras(dockerfile: list[tuple[str, str]]) -> None:
    runs = " ".join(args for keyword, args in dockerfile if keyword == "RUN")
    assert "pip install -c requirements.lock ." in runs
    assert "[dev]" not in runs and ".[" not in runs


def test_dockerfile_runs_as_a_non_root_user(runtime_stage: list[tuple[str, str]]) -> None:
    users = [args for keyword, args in runtime_stage if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0] == "10001"


def test_dockerfile_serves_on_8081_with_a_healthcheck(runtime_stage: list[tuple[str, str]]) -> None:
    assert ("EXPOSE", "8081") in runtime_stage
    healthchecks = [args for keyword, args in runtime_stage if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "http://127.0.0.1:8081/health" in healthchecks[0]
    assert _probed_paths(healthchecks[0]) == ["/health/ready"]
    assert "--start-period=" in healthchecks[0]  # the runtime's boot is not counted as failures
    cmd = [args for keyword, args in runtime_stage if keyword == "CMD"]
    assert cmd == ['["pipelex-server", "serve", "--host", "0.0.0.0", "--port", "8081"]']


def test_dockerfile_environment(runtime_stage: list[tuple[str, str]]) -> None:
    env = " ".join(args for keyword, args in runtime_stage if keyword == "ENV")
    pairs = dict(token.split("=", 1) for token in shlex.split(env))
    assert pairs["DATA_DIR"] == "/data"
    assert pairs["DO_NOT_TRACK"] == "1"
    assert pairs["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "PIPELEX_HOME" not in pairs  # the server sets it under DATA_DIR itself
    workdir = [args for keyword, args in runtime_stage if keyword == "WORKDIR"][-1]
    assert workdir not in ("/", "/data", "/build")


def test_dockerignore_keeps_local_state_out() -> None:
    lines = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert "*" in lines  # a whitelist: only what the Dockerfile copies is sent
    assert {"!pyproject.toml", "!requirements.lock", "!README.md", "!src/"} <= lines
    assert {".git", ".venv", "data", "**/.env", "**/.pipelex", "**/__pycache__"} <= lines
    from_context = [
        args.split()[:-1] for keyword, args in _instructions(DOCKERFILE.read_text()) if keyword == "COPY" and "--from=" not in args
    ]
    copied = {source for sources in from_context for source in sources if not source.startswith("--")}
    assert copied == {"pyproject.toml", "requirements.lock", "README.md", "LICENSE", "src"}


# -- docker-compose config -----------------------------------------------------------------------------------------------


def _compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30).returncode == 0:
        return [docker, "compose"]
    return None


def _compose_config(tmp_path: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = _compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    env_file = tmp_path / "empty.env"  # hermetic: never a developer's .env
    env_file.write_text("")
    env = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ} | extra_env
    return subprocess.run(
        [*command, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_config_is_valid(tmp_path: Path) -> None:
    result = _compose_config(tmp_path, REQUIRED_COMPOSE_ENV)
    assert result.returncode == 0, result.stderr


def test_compose_config_requires_the_s3_keys(tmp_path: Path) -> None:
    result = _compose_config(tmp_path, {})
    assert result.returncode != 0
    assert "AWS_ACCESS_KEY_ID" in result.stderr or "AWS_SECRET_ACCESS_KEY" in result.stderr
