"""The floors pyproject.toml declares are the releases .ci/matrix installs and tests."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]


def _floor_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci" / "floor.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip()] = version.strip()
    return pins


def _declared_floors() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floors = {}
    for requirement in project["dependencies"]:
        match = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?>=([0-9.]+)", requirement)
        if match:
            floors[match.group(1)] = match.group(2)
    return floors


def _same_release(pinned: str, floor: str) -> bool:
    pad = lambda v: tuple(int(p) for p in v.split(".")) + (0,) * (3 - len(v.split(".")))  # noqa: E731
    return pad(pinned) == pad(floor)


def test_every_pinned_floor_is_the_declared_floor() -> None:
    pins, floors = _floor_pins(), _declared_floors()
    for name in ("mlflow", "langgraph", "langchain-core", "openai"):
        assert name in pins, f".ci/floor.txt does not pin {name}"
        assert _same_release(pins[name], floors[name]), (name, pins[name], floors[name])
    assert pins["mlflow-skinny"] == pins["mlflow-tracing"] == pins["mlflow"]


def test_mlflow_has_an_upper_bound_below_the_next_untested_minor() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (mlflow,) = [r for r in project["dependencies"] if r.startswith("mlflow")]
    assert re.search(r"<3\.\d+", mlflow), mlflow
