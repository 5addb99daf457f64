"""Custom judge declarations, their prompts and schemas, and `mlflow:<Name>` scorer names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.genai.scorers import Guidelines, RelevanceToQuery, RetrievalGroundedness

from ragworks.errors import ConfigError, EvalError
from ragworks.eval._judge_specs import CustomJudgeSpec, load_judge_specs, validate_specs
from ragworks.eval._llm_judge import LLMJudge, make_client
from ragworks.eval.custom_judges import custom_scorers, gather_specs, prompt_of, response_format
from ragworks.eval.judges import get_judge
from ragworks.eval.mlflow_scorers import builtin_names, mlflow_model_uri, mlflow_scorer
from ragworks.eval.runner import resolve_scorers
from ragworks.eval.suite import EvalSuite


def _llm(tmp_path: Path) -> LLMJudge:
    return LLMJudge(
        make_client("openai", "judge-model", cache=tmp_path / "c.sqlite"), name="openai:judge-model"
    )


def _spec(**kw: object) -> CustomJudgeSpec:
    return CustomJudgeSpec.model_validate({"name": "polite", "instructions": "Be polite.", **kw})


@pytest.mark.parametrize(
    ("scale", "raw", "score"),
    [
        ("pass-fail", True, 1.0),
        ("pass-fail", False, 0.0),
        ("1-5", 1, 0.0),
        ("1-5", 4, 0.75),
        ("0-1", 0.3, 0.3),
    ],
)
def test_scores_are_normalised_to_unit_range(scale: str, raw: float, score: float) -> None:
    assert _spec(scale=scale).normalise(raw) == pytest.approx(score)


def test_schema_and_prompt_follow_the_scale_and_inputs() -> None:
    spec = _spec(scale="1-5", inputs=["answer", "context"])
    fmt = response_format(spec)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["rationale", "rating"] and schema["additionalProperties"] is False
    prompt = prompt_of(spec)
    assert "Be polite." in prompt.system and '"rating"' in prompt.system
    assert prompt.user == "Answer:\n{answer}\n\nContext passages:\n{context}"
    # Changing the instructions changes the messages, so the cache cannot serve the old verdicts.
    assert prompt_of(_spec(instructions="Be terse.")).system != prompt_of(_spec()).system


def test_invalid_declarations_name_the_judge_and_field(tmp_path: Path) -> None:
    path = tmp_path / "judges.yaml"
    path.write_text(
        yaml.safe_dump(
            [{"name": "ok", "instructions": "x"}, {"name": "bad", "instructions": "x", "scale": "1-10"}]
        )
    )
    with pytest.raises(EvalError, match=r"Invalid custom judge 2 in judges file .*scale"):
        load_judge_specs(path)
    path.write_text(
        yaml.safe_dump({"judges": [{"name": "a", "instructions": "x"}, {"name": "a", "instructions": "y"}]})
    )
    with pytest.raises(EvalError, match="Two custom judges are named 'a'"):
        load_judge_specs(path)
    path.write_text(yaml.safe_dump({"judges": []}))
    with pytest.raises(EvalError, match="non-empty list"):
        load_judge_specs(path)
    with pytest.raises(EvalError, match=r"judge 1 in here: name: .*letters, digits and underscores"):
        validate_specs([{"name": "has space", "instructions": "x"}], source="here")


def test_a_suite_declares_judges_and_a_file_adds_more(tmp_path: Path) -> None:
    suite = EvalSuite.model_validate(
        {"rows": [{"inputs": "q"}], "judges": [{"name": "polite", "instructions": "Be polite."}]}
    )
    path = tmp_path / "j.yaml"
    path.write_text(yaml.safe_dump([{"name": "terse", "instructions": "Be terse.", "scale": "0-1"}]))
    specs = gather_specs(suite.judges, path)
    assert [(s.name, s.scale, s.inputs) for s in specs] == [
        ("polite", "pass-fail", ["question", "answer"]),
        ("terse", "0-1", ["question", "answer"]),
    ]
    with pytest.raises(EvalError, match="Two custom judges are named 'polite'"):
        gather_specs(suite.judges, [_spec()])


def test_custom_judges_need_an_llm_judge_and_free_names(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"Custom judges \(polite\) need an LLM judge, not 'offline:lexical'"
    ):
        custom_scorers([_spec()], get_judge("offline:lexical"))
    with pytest.raises(ConfigError, match="has the name of another scorer"):
        custom_scorers([_spec(name="faithfulness")], _llm(tmp_path), taken=["faithfulness"])
    (made,) = custom_scorers([_spec()], _llm(tmp_path))
    assert made.name == "polite"


def test_mlflow_names_resolve_to_mlflow_builtins_with_the_judges_model(tmp_path: Path) -> None:
    judge = _llm(tmp_path)
    relevance, grounded = resolve_scorers(
        ["mlflow:RelevanceToQuery", "mlflow:RetrievalGroundedness"], judge=judge, k=5
    )
    assert isinstance(relevance, RelevanceToQuery) and relevance.model == "openai:/judge-model"
    assert isinstance(grounded, RetrievalGroundedness) and grounded.model == "openai:/judge-model"
    guidelines = mlflow_scorer("mlflow:Guidelines=Answer in English.", judge=judge)
    assert isinstance(guidelines, Guidelines) and guidelines.guidelines == "Answer in English."
    assert mlflow_model_uri("databricks:my-endpoint") == "databricks:/my-endpoint"
    assert mlflow_model_uri("offline") is None


def test_mlflow_name_errors_are_one_line(tmp_path: Path) -> None:
    judge = _llm(tmp_path)
    with pytest.raises(ConfigError) as unknown:
        mlflow_scorer("mlflow:Relevance", judge=judge)
    message = str(unknown.value)
    assert "\n" not in message and "Unknown MLflow scorer 'mlflow:Relevance'" in message
    assert "mlflow:RelevanceToQuery" in message and "mlflow:Guidelines" in message
    assert "RelevanceToQuery" in builtin_names() and "Scorer" not in builtin_names()
    with pytest.raises(ConfigError, match="needs its guidelines"):
        mlflow_scorer("mlflow:Guidelines", judge=judge)
    with pytest.raises(
        ConfigError, match="mlflow:RelevanceToQuery needs an LLM judge, not 'offline:lexical'"
    ):
        mlflow_scorer("mlflow:RelevanceToQuery", judge=get_judge("offline:lexical"))
