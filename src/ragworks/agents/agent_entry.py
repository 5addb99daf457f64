"""The code MLflow logs as the agent model (models-from-code); see `ragworks.agents.logged_model`.

MLflow runs this file when the model is logged and each time it is loaded. The agent is built from
the model config (an `AgentConfig` dict) with `retriever.index` pointed at the index shipped inside
the model, then handed to MLflow with `set_model`.

Example:
    >>> from ragworks.agents.logged_model import log_agent
    >>> info = log_agent("agent.yaml")                       # doctest: +SKIP
    >>> mlflow.pyfunc.load_model(info.model_uri)             # doctest: +SKIP
"""

import mlflow
from mlflow.models import ModelConfig

from ragworks.agents import build_agent
from ragworks.agents.logged_model import logged_config

agent = build_agent(logged_config(ModelConfig().to_dict(), code_file=__file__))
mlflow.models.set_model(agent)
