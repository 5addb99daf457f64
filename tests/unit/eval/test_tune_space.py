"""The tune search space, the seeded split, the metric choice and the Pareto front, without MLflow."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from ragworks.config import AgentConfig
from ragworks.errors import ConfigError
from ragworks.eval._tune_report import pareto
from ragworks.eval.suite import EvalSuite
from ragworks.eval.tune import check_sources, choose_metric, split_suite
from ragworks.eval.tune_space import (
    ParamSpec,
    apply_params,
    check_space,
    current_values,
    default_space,
    parse_space,
    suggest,
)

CFG = AgentConfig(retriever={"type": "local", "index": "./index", "k": 3})


def _suite(n: int, *, docs: bool = True) -> EvalSuite:
    rows = [
        {"inputs": f"question {i}?", "expectations": {"expected_doc_ids": [f"d{i}.md"]} if docs else None}
        for i in range(n)
    ]
    return EvalSuite.model_validate({"name": "s", "rows": rows})


def test_the_default_space_searches_k_mode_and_a_fusion_weight_only_for_hybrid() -> None:
    space = {s.path: s for s in default_space(CFG, rebuilds_index=False)}
    assert {"retriever.k", "retriever.mode", "retriever.options.fusion_weight"} <= set(space)
    assert "ingest.chunk_size" not in space
    assert space["retriever.options.fusion_weight"].when == {"retriever.mode": ("hybrid",)}
    with_docs = {s.path for s in default_space(CFG, rebuilds_index=True)}
    assert {"ingest.chunk_size", "ingest.chunk_overlap"} <= with_docs
    bm25_only = {s.path for s in default_space(CFG, rebuilds_index=False, has_embeddings=False)}
    assert "retriever.mode" not in bm25_only
    check_space(default_space(CFG, rebuilds_index=True), CFG)


def test_suggest_skips_a_parameter_whose_condition_does_not_hold() -> None:
    space = parse_space(
        {
            "retriever.mode": {"type": "categorical", "choices": ["bm25"]},
            "retriever.options.fusion_weight": {
                "type": "float",
                "low": 0,
                "high": 1,
                "step": 0.05,
                "when": {"retriever.mode": "hybrid"},
            },
            "retriever.k": {"type": "int", "low": 2, "high": 4},
        },
        source="test",
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    picked = suggest(study.ask(), space)
    assert picked["retriever.mode"] == "bm25" and "retriever.options.fusion_weight" not in picked
    assert 2 <= picked["retriever.k"] <= 4
    cfg = apply_params(CFG, picked)
    assert cfg.retriever.mode == "bm25" and cfg.retriever.k == picked["retriever.k"]


def test_categorical_choices_may_be_mappings_and_floats_on_a_step_are_rounded() -> None:
    space = parse_space(
        {
            "retriever.filters": {"type": "categorical", "choices": [None, {"source": "a.md"}]},
            "retriever.options.fusion_weight": {"type": "float", "low": 0, "high": 1, "step": 0.05},
        },
        source="test",
    )
    check_space(space, CFG)
    seen = set()
    for seed in range(6):
        picked = suggest(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask(), space)
        seen.add(repr(picked["retriever.filters"]))
        weight = picked["retriever.options.fusion_weight"]
        assert weight == round(weight, 2)
    assert seen == {"None", "{'source': 'a.md'}"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"retriever.k": {"type": "int", "low": 5, "high": 1}}, "low (5) is above high (1)"),
        ({"retriever.k": {"type": "int", "low": 1.5, "high": 3}}, "low must be an integer"),
        ({"retriever.k": {"type": "int", "low": 1, "high": 3, "lo": 2}}, "unknown key(s) lo"),
        ({"retriever.mode": {"type": "categorical", "choices": []}}, "non-empty list of choices"),
        ({"retriever.k": {"type": "float", "low": 0, "high": 1, "log": True}}, "log needs low above 0"),
        (
            {"retriever.k": {"type": "int", "low": 1, "high": 3, "when": {"retriever.mode": "bm25"}}},
            "not a param",
        ),
    ],
)
def test_malformed_specs_say_what_is_wrong(raw: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_space(raw, source="space file s.yaml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ParamSpec(path="retriever.kk", type="int", low=1, high=3), "'kk' is no field of retriever"),
        (ParamSpec(path="llm_options.timeout_s.x", type="int", low=1, high=3), "has no sub-fields"),
        (ParamSpec(path="retriever.options.nope", type="float", low=0, high=1), "has no option 'nope'"),
        (
            ParamSpec(path="retriever.options.fusion_weight", type="float", low=0, high=2),
            "value 2.0 is refused",
        ),
        (ParamSpec(path="retriever.k", type="int", low=0, high=3), "the value 0 is refused"),
    ],
)
def test_unknown_paths_and_refused_values_fail_before_any_trial(spec: ParamSpec, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        check_space([spec], CFG)


def test_current_values_read_the_starting_config() -> None:
    space = default_space(CFG, rebuilds_index=True)
    values = current_values(CFG, space)
    assert values["retriever.k"] == 3 and values["retriever.mode"] == "hybrid"
    assert values["retriever.options.fusion_weight"] is None and values["ingest.chunk_size"] == 1000


def test_the_split_is_seeded_disjoint_and_complete() -> None:
    suite = _suite(20)
    tuning, held = split_suite(suite, 0.3, seed=1)
    again, held_again = split_suite(suite, 0.3, seed=1)
    assert held is not None and held_again is not None
    assert len(held.rows) == 6 and len(tuning.rows) == 14
    assert tuning.questions() == again.questions() and held.questions() == held_again.questions()
    assert set(tuning.questions()) | set(held.questions()) == set(suite.questions())
    assert not set(tuning.questions()) & set(held.questions())
    _, other = split_suite(suite, 0.3, seed=2)
    assert other is not None and other.questions() != held.questions()
    assert split_suite(suite, 0.0, seed=1) == (suite, None)
    with pytest.raises(ConfigError, match="too few"):
        split_suite(_suite(1), 0.3, seed=0)
    with pytest.raises(ConfigError, match=r"between 0 and 0\.9"):
        split_suite(suite, 1.0, seed=0)


def test_the_metric_defaults_to_a_judge_free_one_and_unknown_names_are_refused() -> None:
    assert choose_metric(None, _suite(3)) == "ndcg_at_k"
    assert choose_metric(None, _suite(3, docs=False)) == "faithfulness"
    assert choose_metric("mrr", _suite(3)) == "mrr"
    with pytest.raises(ConfigError, match="Unknown metric 'ndcg'"):
        choose_metric("ndcg", _suite(3))
    with pytest.raises(ConfigError, match="needs expected_doc_ids"):
        choose_metric("recall_at_k", _suite(3, docs=False))


def test_the_pareto_front_keeps_the_points_no_other_beats_on_both() -> None:
    # (quality, latency): the second is slower and worse than the first
    assert pareto([(0.9, 10.0), (0.8, 20.0), (0.95, 30.0), (0.7, 5.0)]) == [True, False, True, True]


def test_sources_are_checked_before_any_run(tmp_path: Path) -> None:
    cfg = AgentConfig(retriever={"type": "local", "index": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="holds no index: build it with `ragworks ingest` or pass --docs"):
        check_sources(cfg, [])
    with pytest.raises(ConfigError, match="nowhere does not exist"):
        check_sources(cfg, [tmp_path / "nowhere"])
    check_sources(cfg, [tmp_path])  # documents to index: no index needed yet


def test_a_folder_beside_the_best_config_that_tune_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    from ragworks.eval._tune_report import check_best_config_path

    check_best_config_path(tmp_path / "best.yaml")  # nothing there yet
    earlier = tmp_path / "best-index"
    earlier.mkdir()
    (earlier / "ragworks_index.json").write_text("{}")
    check_best_config_path(tmp_path / "best.yaml")  # an earlier tuned index may be replaced
    mine = tmp_path / "mine-index"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not a ragworks index"):
        check_best_config_path(tmp_path / "mine.yaml")
    assert (mine / "notes.txt").read_text() == "keep"
