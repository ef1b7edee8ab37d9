"""Rollouts in parallel: over local cores, or over a Ray cluster (``--ray-address``).

Two shapes of parallel work:

* :class:`Executor` maps a function over independent jobs (the clone's DAgger episodes and the
  evaluation sessions): a process pool locally, Ray tasks on a cluster;
* :func:`make_vec_env` builds stable-baselines3's vectorised environment for PPO: one
  environment per worker in subprocesses locally (``SubprocVecEnv``), or one Ray actor per
  environment on a cluster (:class:`RayVecEnv`).

Ray is imported only when asked for; the traces must be readable at the same paths on every
node (a shared file system, or the same checkout and shared/ folder on each).
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import gymnasium as gym

#: Start method of local worker processes: fresh interpreters, safe with torch in the parent.
START_METHOD = "forkserver"


class RayMissingError(RuntimeError):
    pass


def import_ray():
    """Ray, or a clear error naming the package to install."""
    try:
        import ray
    except ImportError:
        raise RayMissingError(
            "--ray-address needs Ray, which is not installed: pip install 'ray[default]' "
            "(on every node of the cluster too)"
        ) from None
    return ray


def connect_ray(address: str):
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    return ray


class Executor:
    """``map(fn, jobs)`` in parallel; ``fn`` and the jobs must be picklable."""

    def __init__(self, workers: int = 1, ray_address: str | None = None) -> None:
        self.workers = max(1, int(workers))
        self.ray_address = ray_address
        self._pool = None
        self._ray = connect_ray(ray_address) if ray_address else None

    def map(self, fn: Callable[[Any], Any], jobs: Iterable[Any]) -> list[Any]:
        jobs = list(jobs)
        if self._ray is not None:
            remote = self._ray.remote(fn)
            return self._ray.get([remote.remote(j) for j in jobs])
        if self.workers == 1 or len(jobs) <= 1:
            return [fn(j) for j in jobs]
        if self._pool is None:
            ctx = multiprocessing.get_context(START_METHOD)
            self._pool = ctx.Pool(self.workers)
        return self._pool.map(fn, jobs, chunksize=1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_vec_env(
    env_fns: Sequence[Callable[[], gym.Env]], workers: int, ray_address: str | None = None
):
    """The vectorised environment PPO collects rollouts from."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    if ray_address:
        from loki.train.ray_vec_env import RayVecEnv

        return RayVecEnv(env_fns, connect_ray(ray_address))
    if workers <= 1 or len(env_fns) == 1:
        return DummyVecEnv(list(env_fns))
    return SubprocVecEnv(list(env_fns), start_method=START_METHOD)
