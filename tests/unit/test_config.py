import os
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
    loaded = AgentConfig.from_yaml(path)
    assert loaded.retriever.index == str((tmp_path / "idx").resolve())  # read from the file's folder
    assert loaded.model_copy(update={"retriever": cfg.retriever}) == cfg
    loaded.to_yaml(path)  # the second round trip changes nothing
    assert AgentConfig.from_yaml(path) == loaded
    assert loaded.fingerprint() == AgentConfig.from_yaml(path).fingerprint()


def test_relative_paths_in_a_file_are_read_from_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project" / "configs"
    folder.mkdir(parents=True)
    (folder / "agent.yaml").write_text("retriever:\n  index: ../data/index\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    expected = str((tmp_path / "project" / "data" / "index").resolve())
    assert AgentConfig.from_yaml(folder / "agent.yaml").retriever.index == expected
    assert AgentConfig.load(str(folder / "agent.yaml")).retriever.index == expected
    # From a relative path to the file, too.
    assert AgentConfig.load(Path("../project/configs/agent.yaml")).retriever.index == expected


def test_what_a_file_does_not_name_relatively_is_left_alone(tmp_path: Path) -> None:
    absolute = tmp_path / "abs-index"
    cases = {
        f"retriever:\n  index: {absolute}\n": str(absolute),
        "retriever:\n  type: databricks-vector-search\n  index: main.docs.idx\n": "main.docs.idx",
        "llm: offline\n": "./index",  # a default is not a path the file wrote
    }
    for n, (text, expected) in enumerate(cases.items()):
        path = tmp_path / f"c{n}.yaml"
        path.write_text(text)
        assert AgentConfig.from_yaml(path).retriever.index == expected


def test_a_config_given_as_a_dict_keeps_paths_from_the_working_directory() -> None:
    assert AgentConfig.load({"retriever": {"index": "idx"}}).retriever.index == "idx"


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


def test_a_logged_model_ships_the_index_its_config_file_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docs_index: str
) -> None:
    from ragworks.agents.logged_model import _with_index

    project = tmp_path / "project"
    project.mkdir()
    relative = os.path.relpath(docs_index, project)
    (project / "agent.yaml").write_text(f"retriever:\n  index: {relative}\n")
    monkeypatch.chdir(tmp_path)
    cfg = _with_index(AgentConfig.load(project / "agent.yaml"), None)  # what log_agent ships
    assert cfg.retriever.index == str(Path(docs_index).resolve())
