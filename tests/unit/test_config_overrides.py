"""`--set FIELD=VALUE` overrides: dotted paths into the config, values read as YAML, validated like a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragworks.config import AgentConfig
from ragworks.config_overrides import apply_overrides, overridden_config, parse_override
from ragworks.errors import ConfigError


def test_values_are_read_as_yaml_and_set_at_their_path() -> None:
    cfg = apply_overrides(
        AgentConfig(),
        ["retriever.k=3", "system_prompt=prompts:/support@prod", "retriever.filters={year >=: 2020}"],
    )
    assert cfg.retriever.k == 3
    assert cfg.system_prompt == "prompts:/support@prod"
    assert cfg.retriever.filters == {"year >=": 2020}


def test_a_section_left_null_can_be_set_into() -> None:
    cfg = apply_overrides(AgentConfig(), ["retriever.filterable.year.type=int"])
    assert cfg.retriever.filterable["year"].type == "int"


def test_the_file_is_read_first_and_keeps_its_paths(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("retriever: {index: ./idx, k: 2}\nname: first\n")
    cfg = overridden_config(tmp_path / "agent.yaml", ["name=second"])
    assert (cfg.name, cfg.retriever.k) == ("second", 2)
    assert cfg.retriever.index == str((tmp_path / "idx").resolve())


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ("retriever.k", "write FIELD=VALUE"),
        ("=3", "write FIELD=VALUE"),
        ("retriever..k=3", "write FIELD=VALUE"),
        ("retriever.k=[1", "not valid YAML"),
        ("name.first=x", "'name' is a value, not a section"),
    ],
)
def test_malformed_items_say_how_to_write_them(item: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        apply_overrides(AgentConfig(), [item])


def test_unknown_fields_and_bad_values_are_refused_like_a_file() -> None:
    with pytest.raises(ConfigError, match=r"retriever.kk: unknown field"):
        apply_overrides(AgentConfig(), ["retriever.kk=3"])
    with pytest.raises(ConfigError, match=r"retriever.k"):
        apply_overrides(AgentConfig(), ["retriever.k=0"])


def test_a_model_uri_target_cannot_be_overridden() -> None:
    with pytest.raises(ConfigError, match="pass --config"):
        overridden_config(None, ["name=x"])
    assert parse_override("a.b= 7") == (["a", "b"], 7)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Be brief #1 priority is citing", "Be brief #1 priority is citing"),
        ("#1 rule", "#1 rule"),
        ("'quoted: yes'", "quoted: yes"),
        ("null", None),
        ("plain", "plain"),
    ],
)
def test_text_is_kept_as_written_not_cut_at_a_hash(raw: str, expected: object) -> None:
    assert parse_override(f"system_prompt={raw}") == (["system_prompt"], expected)
