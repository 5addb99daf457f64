"""The SparkSession ragworks runs on: the active one (Databricks, a notebook), else a local one it starts."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ragworks.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Spark's defaults that do not suit a command-line run: no web UI to bind, Arrow for pandas UDFs, quiet logs.
_CONF = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
# A local master stays on loopback (a local run must not reach the network); a cluster's executors must reach
# the driver, so there Spark's own choice of address stands.
# Few shuffle partitions suit one machine's cores; a cluster keeps its own setting.
_LOCAL_ONLY_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.sql.shuffle.partitions": "4",
}


def require_pyspark() -> None:
    """Raise a ConfigError that says how to install Spark support when pyspark is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise ConfigError("--spark needs the spark extra: pip install 'ragworks[spark]'.") from exc


def is_local_master(master: str | None) -> bool:
    """True for `local`, `local[N]`, `local[*]` and the default (None): Spark in this process's machine."""
    return master is None or master == "local" or master.startswith("local[")


def session_conf(master: str | None) -> dict[str, str]:
    """The settings ragworks gives a session it starts on `master`."""
    return {**_CONF, **(_LOCAL_ONLY_CONF if is_local_master(master) else {})}


def spark_session(master: str | None = None, *, app_name: str = "ragworks") -> SparkSession:
    """Return the active SparkSession, or start one on `master` (default `local[*]`).

    An active session (Databricks, a notebook, a test fixture) is reused as it is, so the cluster's
    configuration wins; `master` applies only when ragworks starts the session itself.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # The executors' Python must be this interpreter (ragworks importable), not whatever `python` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    local = is_local_master(master)
    if local:
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(master or "local[*]").appName(app_name)
    for key, value in session_conf(master).items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # the JVM failed to start: no Java, or a bad master URL
        raise ConfigError(
            f"Could not start Spark on {master or 'local[*]'!r}: {exc}. Spark needs a Java runtime "
            "(java on PATH or JAVA_HOME) and a master such as local[2]."
        ) from exc
    session.sparkContext.setLogLevel("ERROR")
    return session
