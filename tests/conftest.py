"""Shared by the training tests (tests/test_train_smoke.py, tests/test_ray.py): a two-trace
synthetic family and a clone trained on it at smoke size, made once per test run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loki.train.clone import CloneArgs
from loki.train.clone import train as train_clone
from traces.generators import steps
from traces.mahimahi import write_mahimahi


def clone_smoke_args(family: Path, out: Path, **kw) -> CloneArgs:
    """A DAgger run of seconds: 2 iterations of 120 labelled reports, one epoch each."""
    args = {
        "traces": [family],
        "steps": 120,
        "iterations": 2,
        "episode_s": 3.0,
        "epochs": 1,
        "val_episodes": 2,
        "workers": 1,
        "seed": 0,
        "out": out,
        "command": "loki train clone --steps 120",
    }
    return CloneArgs(**{**args, **kw})


@pytest.fixture(scope="session")
def clone_args():
    """:func:`clone_smoke_args`, for tests that train a clone of their own."""
    return clone_smoke_args


@pytest.fixture(scope="session")
def family(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("synthetic_family")
    (d / "SOURCE.json").write_text(json.dumps({"name": "synthetic"}))
    write_mahimahi(steps([(3000, 2e6), (3000, 6e5)]), d / "a.mahi")
    write_mahimahi(steps([(2000, 1e6), (2000, 3e6)]), d / "b.mahi")
    return d


@pytest.fixture(scope="session")
def clone(family, tmp_path_factory) -> Path:
    return train_clone(clone_smoke_args(family, tmp_path_factory.mktemp("clone")))
