"""The settings of a Spark session ragworks starts: loopback only for a local master."""

from __future__ import annotations

import pytest

from ragworks.scale.spark_session import is_local_master, session_conf


@pytest.mark.parametrize("master", [None, "local", "local[2]", "local[*]"])
def test_a_local_master_stays_on_loopback(master: str | None) -> None:
    assert is_local_master(master)
    conf = session_conf(master)
    assert conf["spark.driver.host"] == conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.ui.enabled"] == "false"


@pytest.mark.parametrize("master", ["spark://head:7077", "yarn", "k8s://https://api:6443", "localhost:7077"])
def test_a_cluster_master_keeps_sparks_own_driver_address(master: str) -> None:
    # Executors on other machines connect back to the driver: 127.0.0.1 would be unreachable for them.
    assert not is_local_master(master)
    conf = session_conf(master)
    assert "spark.driver.host" not in conf and "spark.driver.bindAddress" not in conf
    assert "spark.sql.shuffle.partitions" not in conf
