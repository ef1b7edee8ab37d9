"""Parallel rollouts: the process pool gives what a serial loop gives; Ray is optional (its
real runs are in tests/test_ray.py)."""

import sys

import pytest

from loki.train.parallel import Executor, RayMissingError, import_ray


def _square(x: int) -> int:
    return x * x


def test_pool_matches_serial_and_keeps_order():
    jobs = list(range(7))
    with Executor(workers=2) as ex:
        assert ex.map(_square, jobs) == [x * x for x in jobs]
    assert Executor(workers=1).map(_square, jobs) == [x * x for x in jobs]


def test_ray_address_without_ray_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayMissingError, match="pip install 'ray"):
        import_ray()
    with pytest.raises(RayMissingError, match="--ray-address"):
        Executor(workers=1, ray_address="auto")
