from pathlib import Path

import pytest

import ragworks
from ragworks.config import AgentConfig, Settings
from ragworks.errors import ConfigError


def test_smallest_config_has_defaults() -> None:
    cfg = AgentConfig(retriever={"type": "local", "index": "./index", "k": 5})
    assert (cfg.llm, cfg.agent, cfg.retriever.k) == ("offline", "rag", 5)


def test_yaml_round_trip(tmp_path: Path) -> None:
    cfg = AgentConfig(
        llm="openai:gpt-4o-mini", retriever={"index": "idx", "k": 3, "filters": {"year >=": 2020}}
    )
    path = tmp_path / "agent.yaml"
    cfg.to_yaml(path)
    assert AgentConfig.from_yaml(path) == cfg
    assert cfg.fingerprint() == AgentConfig.from_yaml(path).fingerprint()


def test_errors_name_the_field_and_what_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("agent: planner\nretriever:\n  k: 0\n  colour: red\n")
    with pytest.raises(ConfigError) as info:
        AgentConfig.from_yaml(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "agent: Input should be 'rag' or 'tool-calling'" in msg
    assert "retriever.k" in msg and "greater than or equal to 1" in msg
    assert "retriever.colour: unknown field" in msg


@pytest.mark.parametrize("llm", ["gpt-4", "openai:", "ollama:llama3"])
def test_bad_llm_names_are_rejected(llm: str) -> None:
    with pytest.raises(ConfigError, match="llm"):
        AgentConfig.load({"llm": llm})


def test_missing_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        AgentConfig.from_yaml(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        AgentConfig.from_yaml(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        AgentConfig.from_yaml(tmp_path / "broken.yaml")


def test_settings_read_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAGWORKS_INDEX", "/data/idx")
    monkeypatch.setenv("RAGWORKS_API_TOKEN", "s3cret")
    settings = Settings()
    assert settings.index == "/data/idx"
    assert "s3cret" not in repr(settings)


def test_public_api_is_sorted_and_importable() -> None:
    assert ragworks.__all__ == sorted(ragworks.__all__)
    for name in ragworks.__all__:
        assert getattr(ragworks, name) is not None
