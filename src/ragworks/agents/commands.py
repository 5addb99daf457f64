"""The agent commands of the CLI: `chat`, `log-model` and `quickstart`; `register(app)` adds them.

Example:
    $ ragworks quickstart
    $ ragworks chat "How do I log an agent?" --index ./index
    $ ragworks log-model --config agent.yaml --registered-model-name ragworks_agent
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from ragworks.config import AgentConfig, RetrieverConfig, env_flag

if TYPE_CHECKING:
    from ragworks.agents.responses_agent import RagResponsesAgent

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""Where the CLI logs models and traces when MLFLOW_TRACKING_URI is not set (MLflow's own default)."""
QUICKSTART_EXPERIMENT = "ragworks-quickstart"
_QUIT = {"exit", "quit", ":q", "/exit", "/quit"}
Write = Callable[[str], None]
T = TypeVar("T")

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="RAGWORKS_CONFIG", help="Agent config YAML (default: built-in)."),
]
IndexOpt = Annotated[
    Path | None,
    typer.Option("--index", "-i", envvar="RAGWORKS_INDEX", help="Local index (replaces retriever.index)."),
]


def register(app: typer.Typer) -> None:
    """Add `chat`, `log-model` and `quickstart` to the CLI; call it once `handle_errors` is defined."""
    from ragworks.cli_errors import handle_errors

    app.command("chat")(handle_errors(chat))
    app.command("log-model")(handle_errors(log_model))
    app.command("quickstart")(handle_errors(quickstart))


# ---------------------------------------------------------------------------------------------- chat


def chat(
    question: Annotated[
        str | None, typer.Argument(help="Ask this and exit; without it, start a conversation.")
    ] = None,
    config: ConfigOpt = None,
    index: IndexOpt = None,
    trace: Annotated[
        bool, typer.Option("--trace/--no-trace", help="Record each turn as an MLflow trace.")
    ] = False,
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment",
            help="MLflow experiment for the traces, created if missing (implies --trace) [default: the "
            "config's tracking.experiment].",
        ),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="Talk to this Databricks Model Serving endpoint (its OpenAI route), not a local agent.",
        ),
    ] = None,
) -> None:
    """Ask the agent; the answer streams, then the sources it cites.

    Example: ragworks chat "How does hybrid search work?" --index ./index
    """
    if endpoint is not None:
        from ragworks.scale.endpoint_client import chat_with_endpoint

        return chat_with_endpoint(endpoint, question, tracing_asked=trace or experiment is not None)
    agent = cli_agent(config, index)
    trace = trace or experiment is not None
    if trace:
        use_tracking_store()
        name = experiment or (agent.config.tracking.experiment if agent.config else None)
        if name:
            from ragworks.trace_export.experiment import use_experiment

            use_experiment(name)
    if question is not None:
        traced(trace, lambda: ask(agent, [user_message(question)], echo_raw))
    else:
        traced(trace, lambda: repl(agent, echo_raw, read=_read_line))


def cli_agent(config: Path | None, index: Path | None) -> RagResponsesAgent:
    """Build the agent from a config file (or the defaults), with `index` as its local index."""
    from ragworks.agents.loading import load_agent
    from ragworks.agents.responses_agent import RagResponsesAgent

    agent = load_agent(config=cli_config(config, index))
    assert isinstance(agent, RagResponsesAgent)  # a config always builds ragworks' own agent
    return agent


def cli_config(config: Path | None, index: Path | None) -> AgentConfig:
    """The config the CLI options name: the file (or the defaults), `--index` replacing retriever.index."""
    cfg = AgentConfig.load(config)
    if index is not None:
        cfg = cfg.model_copy(deep=True)
        cfg.retriever.index = str(index)
    return cfg


def user_message(text: str) -> dict[str, str]:
    """A user turn in the Responses input format."""
    return {"role": "user", "content": text}


@dataclass(kw_only=True)
class Answer:
    """One streamed answer: its text and the sources the agent returned with it."""

    text: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)


def stream_answer(agent: RagResponsesAgent, messages: Sequence[dict[str, Any]], write: Write) -> Answer:
    """Run `predict_stream`, writing text deltas (and tool calls) as they come; return the answer."""
    from mlflow.types.responses import ResponsesAgentRequest

    answer = Answer()
    for event in agent.predict_stream(ResponsesAgentRequest.model_validate({"input": list(messages)})):
        data = event if isinstance(event, dict) else event.model_dump(exclude_none=True)
        if data.get("type") == "response.output_text.delta":
            write(data["delta"])
            answer.text += data["delta"]
        elif data.get("type") == "response.output_item.done":
            item = data.get("item") or {}
            if item.get("type") == "function_call":
                write(f"[{item.get('name')}({item.get('arguments', '')})]\n")
            answer.sources = (data.get("custom_outputs") or {}).get("sources", answer.sources)
    write("\n")
    return answer


def format_sources(sources: Sequence[dict[str, Any]]) -> list[str]:
    """Lines naming the cited sources, or the retrieved ones when the answer cites none."""
    cited = [s for s in sources if s.get("cited")]
    if not sources:
        return ["(no sources retrieved)"]
    title = "Sources:" if cited else "Retrieved (none cited):"
    return [title] + [f"  [{s.get('n', '?')}] {s.get('source') or s.get('id')}" for s in cited or sources]


def ask(agent: RagResponsesAgent, messages: Sequence[dict[str, Any]], write: Write) -> Answer:
    """Stream one answer, then print its sources."""
    answer = stream_answer(agent, messages, write)
    for line in format_sources(answer.sources):
        write(line + "\n")
    return answer


def repl(agent: RagResponsesAgent, write: Write, *, read: Callable[[str], str | None]) -> None:
    """A conversation: each turn sends the whole history; `/reset` forgets it, an empty line quits."""
    write("Ask about your documents. /reset starts over; an empty line, 'exit' or Ctrl-D quits.\n")
    history: list[dict[str, Any]] = []
    while (line := read("\n> ")) is not None and line.strip() and line.strip().lower() not in _QUIT:
        if line.strip() == "/reset":
            history.clear()
            write("(conversation cleared)\n")
            continue
        history.append(user_message(line.strip()))
        answer = ask(agent, history, write)
        history.append({"role": "assistant", "content": answer.text})


def _read_line(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None


def echo_raw(text: str) -> None:
    """Write text as it is (no newline added), flushed, so streamed deltas show at once."""
    typer.echo(text, nl=False)


def traced(on: bool, func: Callable[[], T]) -> T:
    """Run `func` with MLflow tracing as MLflow has it (on by default), or with tracing off.

    Off uses MLflow's `trace_disabled`, which puts the tracer back afterwards without re-initialising
    it (re-initialising would open the tracking store just to restore a state).
    """
    if on:
        return func()
    from mlflow.tracing.provider import trace_disabled

    return trace_disabled(func)()


def use_tracking_store() -> str:
    """Use MLFLOW_TRACKING_URI, or a SQLite store in the current folder; return the URI.

    MLflow's INFO lines and download progress bars are turned off unless the CLI runs with --debug.
    """
    import mlflow

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    uri = env_flag("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    return uri


def ui_hint(uri: str) -> str:
    """How to look at the runs and traces in a tracking store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    if uri == "databricks" or uri.startswith("databricks"):
        return "open the experiment in your Databricks workspace"
    return f"mlflow ui --backend-store-uri {uri}"


# ----------------------------------------------------------------------------------------- log-model


def log_model(
    config: ConfigOpt = None,
    index: IndexOpt = None,
    name: Annotated[str, typer.Option("--name", help="The model's name in the experiment.")] = "agent",
    registered_model_name: Annotated[
        str | None, typer.Option("--registered-model-name", help="Also register it under this name.")
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option("--experiment", envvar="MLFLOW_EXPERIMENT_NAME", help="MLflow experiment to log to."),
    ] = None,
) -> None:
    """Log the agent as an MLflow model (from code), with its config, its local index and resources.

    Logs to MLFLOW_TRACKING_URI, or to sqlite:///mlflow.db in the current folder.

    Example: ragworks log-model --config agent.yaml --index ./index --registered-model-name ragworks_agent
    """
    import mlflow

    from ragworks.agents.logged_model import log_agent

    uri = use_tracking_store()
    if experiment:
        mlflow.set_experiment(experiment)
    info = log_agent(cli_config(config, None), name, registered_model_name, index_path=index)
    _print_logged(info, uri)


def _print_logged(info: Any, uri: str) -> None:  # Any: mlflow.models.model.ModelInfo, imported lazily
    typer.echo(f"Logged model {info.model_uri} (model id {info.model_id})")
    if info.registered_model_version is not None:
        typer.echo(f"Registered version {info.registered_model_version}")
    typer.echo(f"  load:   mlflow.pyfunc.load_model({info.model_uri!r})")
    serve = f"MLFLOW_TRACKING_URI={uri} mlflow models serve -m {info.model_uri} --env-manager local"
    typer.echo(f"  serve:  {serve}")
    typer.echo(f"  browse: {ui_hint(uri)}")


# ---------------------------------------------------------------------------------------- quickstart


def quickstart(
    workdir: Annotated[Path, typer.Option("--dir", help="Where the docs, index and agent config go.")] = Path(
        ".ragworks/quickstart"
    ),
    embeddings: Annotated[str, typer.Option("--embeddings", help="auto | minilm | hashing | none.")] = "auto",
    log: Annotated[bool, typer.Option("--log/--no-log", help="Log the agent as an MLflow model.")] = True,
    evaluate: Annotated[
        bool, typer.Option("--eval/--no-eval", help="Run the shipped eval suite with the offline judge.")
    ] = True,
) -> None:
    """Index the docs, ask the agent about them, evaluate it, log it to MLflow, and show the traces.

    Traces and the model go to MLFLOW_TRACKING_URI, or to sqlite:///mlflow.db in the current folder.

    Example: ragworks quickstart --embeddings hashing
    """
    import mlflow

    from ragworks.agents.logged_model import log_agent
    from ragworks.quickstart import QUESTIONS

    uri = use_tracking_store()
    cfg = _quickstart_config(workdir, embeddings)
    mlflow.set_experiment(QUICKSTART_EXPERIMENT)
    agent = cli_agent(workdir / "agent.yaml", None)
    for question in QUESTIONS:  # traced: MLflow traces every ResponsesAgent call by default
        typer.secho(f"\n? {question}", bold=True)
        ask(agent, [user_message(question)], echo_raw)
    if evaluate:
        from ragworks.eval import run_example_suite

        typer.secho("\nEvaluating the agent on the example suite (offline judge)...", bold=True)
        typer.echo(run_example_suite(agent, judge="offline", experiment=QUICKSTART_EXPERIMENT).summary())
    info = log_agent(cfg, "agent") if log else None
    _print_next_steps(workdir, uri, info)


def _quickstart_config(workdir: Path, embeddings: str) -> AgentConfig:
    from ragworks.quickstart import prepare

    index_dir, report = prepare(workdir, embeddings=embeddings)
    typer.echo(f"Indexed {workdir / 'docs'} into {index_dir} (embeddings: {report.embedder})")
    retriever = RetrieverConfig(type="local", index=str(index_dir.resolve()), k=4)
    cfg = AgentConfig(name="ragworks-quickstart", retriever=retriever)
    cfg.to_yaml(workdir / "agent.yaml")
    return cfg


def _print_next_steps(workdir: Path, uri: str, info: Any) -> None:  # Any: ModelInfo | None
    typer.echo("")
    if info is not None:
        _print_logged(info, uri)
    typer.secho("\nNext:", bold=True)
    typer.echo(f"  look at the traces (experiment {QUICKSTART_EXPERIMENT!r}):  {ui_hint(uri)}")
    typer.echo(f"  chat with the agent:  ragworks chat --config {workdir / 'agent.yaml'}")
    typer.echo("  index your own documents:  ragworks ingest DOCS --index ./index")
    sys.stdout.flush()


__all__ = [
    "Answer",
    "ask",
    "chat",
    "cli_config",
    "format_sources",
    "log_model",
    "quickstart",
    "register",
    "repl",
    "stream_answer",
    "traced",
    "use_tracking_store",
]
