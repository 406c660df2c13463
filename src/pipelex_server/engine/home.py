"""The pipelex configuration this server generates for its own runtime.

The runtime reads its configuration from a home directory (``PIPELEX_HOME``). The server owns one under its data
directory and rewrites the parts it decides at every boot:

- ``inference/backends_override.toml``: exactly the backends whose credentials are present are enabled (the
  keyless ``internal`` backend stays on); ``OPENAI_BASE_URL`` alone enables ``openai`` at that endpoint;
- ``inference/deck/zz_pipelex_server.toml``: when a single LLM provider is configured, the deck's default aliases
  (which name OpenAI models) are pointed at that provider's models;
- then the operator's own directory (``PIPELEX_CONFIG_DIR``) is layered on top: its ``pipelex.toml`` and
  ``pipelex_override.toml`` are merged over ours, its ``inference/`` files replace or override ours.

Nothing here imports pipelex at module level: the runtime is imported only once the environment is ready.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# backend name -> the environment variables that must all be set to enable it
BACKEND_CREDENTIALS: dict[str, tuple[str, ...]] = {
    "anthropic": ("ANTHROPIC_API_KEY",),
    "azure_openai": ("AZURE_API_KEY", "AZURE_API_BASE", "AZURE_API_VERSION"),
    "bedrock": ("BEDROCK_ENABLED", "AWS_REGION"),
    "blackboxai": ("BLACKBOX_API_KEY",),
    "fal": ("FAL_API_KEY",),
    "google": ("GOOGLE_API_KEY",),
    "groq": ("GROQ_API_KEY",),
    "huggingface": ("HF_TOKEN",),
    "linkup": ("LINKUP_API_KEY",),
    "minimax": ("MINIMAX_API_KEY",),
    "mistral": ("MISTRAL_API_KEY",),
    "ollama": ("OLLAMA_BASE_URL",),
    "openai": ("OPENAI_API_KEY",),
    "openrouter": ("OPENROUTER_API_KEY",),
    "portkey": ("PORTKEY_API_KEY",),
    "scaleway": ("SCALEWAY_API_KEY", "SCALEWAY_ENDPOINT"),
    "typesafe": ("TYPESAFE_API_KEY",),
    "vertexai": ("GCP_PROJECT_ID", "GCP_LOCATION", "GCP_CREDENTIALS_FILE_PATH"),
    "xai": ("XAI_API_KEY",),
}

# Backends that serve no LLM of their own: they never count as "the single provider" for the deck defaults.
NON_LLM_BACKENDS = frozenset({"fal", "linkup", "typesafe", "internal"})

# The models a single configured provider's deck defaults point at: (premium, general, small).
PROVIDER_DEFAULT_MODELS: dict[str, tuple[str, str, str]] = {
    "anthropic": ("claude-4.8-opus", "claude-4.6-sonnet", "claude-4.5-haiku"),
    "google": ("gemini-pro-latest", "gemini-flash-latest", "gemini-flash-lite-latest"),
    "mistral": ("mistral-large", "mistral-medium", "mistral-small-4"),
    "xai": ("grok-4", "grok-4-fast-reasoning", "grok-3-mini"),
    "groq": ("gpt-oss-120b", "llama-3.3-70b-versatile", "llama-3.1-8b-instant"),
}

DEFAULT_ALIASES_TIER = {
    "default-premium": 0,
    "default-premium-vision": 0,
    "default-premium-structured": 0,
    "best-gpt": 0,
    "default-general": 1,
    "default-large-context-code": 1,
    "default-large-context-text": 1,
    "default-small": 2,
    "default-small-structured": 2,
    "default-small-vision": 2,
    "default-small-creative": 2,
}

SERVER_DECK_FILE = "zz_pipelex_server.toml"
OPERATOR_DECK_DIR = "zzzz_operator"
GATEWAY_WARNING = (
    "PIPELEX_GATEWAY_API_KEY is set, but the pipelex runtime this server runs on (0.92) has no Gateway any more: "
    "the key is ignored. Set a provider key instead (OPENAI_API_KEY, ANTHROPIC_API_KEY, GOOGLE_API_KEY, "
    "MISTRAL_API_KEY, ...), or OPENAI_BASE_URL for an OpenAI-compatible endpoint (Ollama, vLLM, LiteLLM)."
)


@dataclass(frozen=True)
class InferencePlan:
    """Which backends the runtime enables, decided from the environment alone."""

    enabled: tuple[str, ...]
    openai_base_url: str | None = None
    single_llm_provider: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_live(self) -> bool:
        return any(name not in NON_LLM_BACKENDS for name in self.enabled)

    @property
    def fingerprint(self) -> str:
        return f"{sorted(self.enabled)}|{self.openai_base_url}"


def plan_inference(env: Mapping[str, str], *, openai_base_url: str | None = None) -> InferencePlan:
    """Decide the enabled backends from credentials present in ``env``."""

    def present(name: str) -> bool:
        value = env.get(name, "").strip()
        if name == "BEDROCK_ENABLED":  # a switch, not a credential
            return value.lower() in ("1", "true", "yes", "on")
        return bool(value)

    enabled = [name for name, needed in BACKEND_CREDENTIALS.items() if all(present(var) for var in needed)]
    base_url = openai_base_url or env.get("OPENAI_BASE_URL", "").strip() or None
    if base_url and "openai" not in enabled:
        enabled.append("openai")
    llm_providers = [name for name in enabled if name not in NON_LLM_BACKENDS]
    single = llm_providers[0] if len(llm_providers) == 1 else None
    warnings = (GATEWAY_WARNING,) if present("PIPELEX_GATEWAY_API_KEY") else ()
    return InferencePlan(
        enabled=tuple(sorted(enabled)),
        openai_base_url=base_url,
        single_llm_provider=single,
        warnings=warnings,
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    if key.replace("_", "").replace("-", "").isalnum():
        return key
    return _toml_value(key)


def dump_toml(document: Mapping[str, Any]) -> str:
    """A minimal TOML writer for the flat-ish documents we generate (tables of scalars and inline tables)."""
    lines: list[str] = []

    def emit(prefix: list[str], table: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
        if prefix and (scalars or not tables):
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        for key, value in scalars.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        if scalars:
            lines.append("")
        for key, value in tables.items():
            emit([*prefix, key], value)

    emit([], document)
    return "\n".join(lines).rstrip() + "\n"


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _backends_override(plan: InferencePlan, known_backends: list[str]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name in known_backends:
        document[name] = {"enabled": name in plan.enabled or name == "internal"}
    if plan.openai_base_url:
        document["openai"]["endpoint"] = plan.openai_base_url
        if not os.environ.get("OPENAI_API_KEY", "").strip():
            # OpenAI-compatible servers (Ollama, vLLM, a test stub) take any key; the SDK insists on one.
            document["openai"]["api_key"] = "not-needed"
    if "ollama" in plan.enabled:
        document["ollama"]["endpoint"] = os.environ["OLLAMA_BASE_URL"].strip()
    return document


def _provider_models(kit_backends_dir: Path, provider: str) -> list[str]:
    document = _read_toml(kit_backends_dir / f"{provider}.toml")
    models = []
    for name, spec in document.items():
        if name == "defaults" or not isinstance(spec, Mapping):
            continue
        if spec.get("model_type", "llm") == "llm" and "structured" in spec.get("outputs", []):
            models.append(name)
    return models


def _single_provider_deck(provider: str, kit_inference_dir: Path) -> dict[str, Any]:
    served = _provider_models(kit_inference_dir / "backends", provider)
    if not served:
        return {}
    choice = PROVIDER_DEFAULT_MODELS.get(provider)
    if choice is None or not all(model in served for model in choice):
        choice = (served[-1], served[len(served) // 2], served[0])
    aliases = {alias: choice[tier] for alias, tier in DEFAULT_ALIASES_TIER.items()}
    deck = _read_toml(kit_inference_dir / "deck" / "1_llm_deck.toml")
    presets: dict[str, Any] = {}
    for preset_name, preset in deck.get("llm", {}).get("presets", {}).items():
        model = preset.get("model", "") if isinstance(preset, Mapping) else ""
        if model and not model.startswith("@") and model not in served:
            presets[preset_name] = {**preset, "model": "@default-general"}
    document: dict[str, Any] = {"llm": {"aliases": aliases}}
    if presets:
        document["llm"]["presets"] = presets
    return document


def prepare_home(
    *,
    home: Path,
    plan: InferencePlan,
    kit_inference_dir: Path,
    operator_config_dir: Path | None,
) -> None:
    """Write the server-owned parts of the pipelex home. Idempotent; safe to call at every boot."""
    inference = home / "inference"
    (inference / "deck").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(inference / "deck" / OPERATOR_DECK_DIR, ignore_errors=True)  # what the operator removed goes too
    known_backends = list(_read_toml(kit_inference_dir / "backends.toml").keys())
    if "internal" not in known_backends:
        known_backends.append("internal")
    backends = _backends_override(plan, known_backends)

    deck_path = inference / "deck" / SERVER_DECK_FILE
    deck = _single_provider_deck(plan.single_llm_provider, kit_inference_dir) if plan.single_llm_provider else {}
    if plan.single_llm_provider == "openai":
        deck = {}

    if operator_config_dir is not None:
        operator_inference = operator_config_dir / "inference"
        _deep_merge(backends, _read_toml(operator_inference / "backends_override.toml"))
        for name in ("backends.toml", "routing_profiles.toml", "routing_profiles_override.toml"):
            if (operator_inference / name).is_file():
                shutil.copyfile(operator_inference / name, inference / name)
        operator_deck = operator_inference / "deck"
        if operator_deck.is_dir():
            # deck files merge in path order: under OPERATOR_DECK_DIR they come after the kit's and ours, and win
            target = inference / "deck" / OPERATOR_DECK_DIR
            target.mkdir(parents=True, exist_ok=True)
            for source in sorted(operator_deck.glob("*.toml")):
                shutil.copyfile(source, target / source.name)

    (inference / "backends_override.toml").write_text(dump_toml(backends), encoding="utf-8")
    if deck:
        deck_path.write_text(dump_toml(deck), encoding="utf-8")
    elif deck_path.exists():
        deck_path.unlink()

    operator_main: dict[str, Any] = {}
    if operator_config_dir is not None:
        for name in ("pipelex.toml", "pipelex_override.toml"):
            _deep_merge(operator_main, _read_toml(operator_config_dir / name))
    override_path = home / "pipelex_override.toml"
    if operator_main:
        override_path.write_text(dump_toml(operator_main), encoding="utf-8")
    elif override_path.exists():
        override_path.unlink()


def find_project_pipelex_dir(start: Path) -> Path | None:
    """The project ``.pipelex/`` the runtime would layer in from ``start`` (it walks up to the first project root)."""
    markers = (".pipelex", ".git", "pyproject.toml", "setup.py", "setup.cfg", "package.json", ".hg")
    home = Path.home()
    current = start.resolve()
    while True:
        if current != home and any((current / marker).exists() for marker in markers):
            candidate = current / ".pipelex"
            return candidate if candidate.is_dir() else None
        if current.parent == current:
            return None
        current = current.parent


def require_clean_working_directory(cwd: Path) -> None:
    """The runtime loads ./.env (over the real environment) and a project's .pipelex/ from the cwd: refuse both."""
    from pipelex_server.errors import ConfigurationError

    if (cwd / ".env").exists():
        raise ConfigurationError(
            f"{cwd / '.env'} exists: the pipelex runtime would load it over the real environment. "
            "Start the server from another directory, or remove it."
        )
    stray = find_project_pipelex_dir(cwd)
    if stray is not None:
        raise ConfigurationError(
            f"{stray} would be layered into the runtime configuration. Point PIPELEX_CONFIG_DIR at it instead, "
            "and start the server from a directory without a .pipelex/."
        )
