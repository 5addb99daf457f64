"""The MLflow experiment traces go to: named by `--experiment` or the config's `tracking.experiment`.

`use_experiment` makes it the active experiment, creating it when missing. Several server workers
may start at once; creating the same experiment twice is not an error here (MLflow's
`set_experiment` returns without activating it in that race, so the id is looked up again instead).
"""

from __future__ import annotations

import mlflow
from mlflow.entities import LifecycleStage
from mlflow.exceptions import MlflowException

from ragworks.errors import ConfigError


def use_experiment(name: str) -> str:
    """Make the experiment `name` the active one (created if missing); return its id.

    Raises:
        ConfigError: the experiment is deleted, or the tracking store refused to create it.
    """
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            client.create_experiment(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another worker made it first: fine
                raise ConfigError(f"Could not create the MLflow experiment {name!r}: {exc.message}") from exc
        experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != LifecycleStage.ACTIVE:
        raise ConfigError(
            f"The MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore) "
            "or name another one with --experiment or tracking.experiment."
        )
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    return str(experiment.experiment_id)
