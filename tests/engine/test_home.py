"""The runtime configuration the server generates: backends from credentials, deck defaults, operator layering."""

import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

from pipelex_server.engine.home import (
    OPERATOR_DECK_DIR,
    SERVER_DECK_FILE,
    dump_toml,
    plan_inference,
    prepare_home,
    require_clean_working_directory,
)
from pipelex_server.errors import ConfigurationError

KIT_INFERENCE = Path(str(files("pipelex.kit") / "configs" / "inference"))


def read(path: Path) -> dict:
    return tomllib.loads(path.read_text())


def test_no_credentials_means_no_live_backend():
    plan = plan_inference({})
    assert plan.enabled == () and not plan.is_live and plan.warnings == ()


def test_base_url_alone_enables_openai():
    plan = plan_inference({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"})
    assert plan.enabled == ("openai",) and plan.is_live and plan.single_llm_provider == "openai"


def test_backends_need_all_their_variables():
    assert plan_inference({"AZURE_API_KEY": "k"}).enabled == ()
    assert plan_inference({"AZURE_API_KEY": "k", "AZURE_API_BASE": "b", "AZURE_API_VERSION": "v"}).enabled == ("azure_openai",)
    assert plan_inference({"AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "x"}).enabled == ()  # S3 keys never enable Bedrock
    assert plan_inference({"AWS_REGION": "eu-west-1", "BEDROCK_ENABLED": "false"}).enabled == ()
    assert plan_inference({"AWS_REGION": "eu-west-1", "BEDROCK_ENABLED": "true"}).enabled == ("bedrock",)


def test_two_providers_keep_the_shipped_defaults_and_non_llm_backends_do_not_count():
    assert plan_inference({"OPENAI_API_KEY": "a", "ANTHROPIC_API_KEY": "b"}).single_llm_provider is None
    plan = plan_inference({"ANTHROPIC_API_KEY": "b", "FAL_API_KEY": "c"})
    assert plan.single_llm_provider == "anthropic"


def test_the_gateway_key_is_named_at_boot():
    (warning,) = plan_inference({"PIPELEX_GATEWAY_API_KEY": "x"}).warnings
    assert "no Gateway" in warning and "OPENAI_API_KEY" in warning


def test_prepare_home_enables_exactly_the_planned_backends(tmp_path):
    plan = plan_inference({"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    prepare_home(home=tmp_path, plan=plan, kit_inference_dir=KIT_INFERENCE, operator_config_dir=None)
    backends = read(tmp_path / "inference" / "backends_override.toml")
    assert backends["openai"] == {"enabled": True, "endpoint": "http://127.0.0.1:9/v1", "api_key": "not-needed"}
    assert backends["internal"]["enabled"] is True
    assert all(not spec["enabled"] for name, spec in backends.items() if name not in ("openai", "internal"))
    assert not (tmp_path / "inference" / "deck" / SERVER_DECK_FILE).exists()


def test_a_single_other_provider_gets_the_deck_defaults(tmp_path):
    plan = plan_inference({"ANTHROPIC_API_KEY": "k"})
    prepare_home(home=tmp_path, plan=plan, kit_inference_dir=KIT_INFERENCE, operator_config_dir=None)
    deck = read(tmp_path / "inference" / "deck" / SERVER_DECK_FILE)
    assert all(model.startswith("claude") for model in deck["llm"]["aliases"].values())
    served = set(read(KIT_INFERENCE / "backends" / "anthropic.toml"))
    assert set(deck["llm"]["aliases"].values()) <= served
    for preset in deck["llm"].get("presets", {}).values():
        assert preset["model"].startswith("@")


def test_operator_configuration_is_layered_on_top(tmp_path):
    operator = tmp_path / "operator"
    (operator / "inference" / "deck").mkdir(parents=True)
    (operator / "inference" / "deck" / "my_deck.toml").write_text('[llm.aliases]\ndefault-general = "gpt-4o-mini"\n')
    (operator / "inference" / "backends_override.toml").write_text("[mistral]\nenabled = true\n")
    (operator / "pipelex.toml").write_text("[runtime.log]\njson_logs_indent = 2\n")
    home = tmp_path / "home"
    plan = plan_inference({"ANTHROPIC_API_KEY": "k"})
    prepare_home(home=home, plan=plan, kit_inference_dir=KIT_INFERENCE, operator_config_dir=operator)
    assert read(home / "inference" / "backends_override.toml")["mistral"]["enabled"] is True
    copied = home / "inference" / "deck" / OPERATOR_DECK_DIR / "my_deck.toml"
    assert copied.exists()
    # deck files merge in path order: the operator's come after ours, so they win
    assert str(home / "inference" / "deck" / SERVER_DECK_FILE) < str(copied)
    assert read(home / "pipelex_override.toml") == {"runtime": {"log": {"json_logs_indent": 2}}}
    # a file the operator removes is gone at the next boot
    (operator / "inference" / "deck" / "my_deck.toml").unlink()
    prepare_home(home=home, plan=plan, kit_inference_dir=KIT_INFERENCE, operator_config_dir=operator)
    assert not copied.exists()


def test_dump_toml_round_trips():
    document = {"a": {"enabled": True, "endpoint": 'x"y', "n": 2}, "llm": {"presets": {"p-1": {"model": "@m", "temperature": 0.5}}}}
    assert tomllib.loads(dump_toml(document)) == document


def test_stray_dotenv_and_project_config_are_refused(tmp_path):
    require_clean_working_directory(tmp_path)
    (tmp_path / ".env").write_text("X=1\n")
    with pytest.raises(ConfigurationError, match=r"\.env"):
        require_clean_working_directory(tmp_path)
    project = tmp_path / "project"
    (project / ".pipelex").mkdir(parents=True)
    (project / "sub").mkdir()
    with pytest.raises(ConfigurationError, match="PIPELEX_CONFIG_DIR"):
        require_clean_working_directory(project / "sub")
