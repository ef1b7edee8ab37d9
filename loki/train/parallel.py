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
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

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
    if ray_address:
        return RayVecEnv(env_fns, connect_ray(ray_address))
    if workers <= 1 or len(env_fns) == 1:
        return DummyVecEnv(list(env_fns))
    return SubprocVecEnv(list(env_fns), start_method=START_METHOD)


class _EnvActor:
    """One environment living in a Ray actor; resets itself at episode end like SB3's workers."""

    def __init__(self, env_fn: Callable[[], gym.Env]) -> None:
        self.env = env_fn()
        self._seed: int | None = None

    def spaces(self):
        return self.env.observation_space, self.env.action_space

    def seed(self, seed: int | None) -> None:
        self._seed = seed

    def reset(self):
        obs, info = self.env.reset(seed=self._seed)
        self._seed = None
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        if done:
            info["terminal_observation"] = obs
            obs, _reset_info = self.env.reset()
        return obs, reward, done, info

    def call(self, name: str, *args, **kwargs):
        attr = getattr(self.env, name)
        return attr(*args, **kwargs) if callable(attr) else attr

    def set(self, name: str, value) -> None:
        setattr(self.env, name, value)


class RayVecEnv(VecEnv):
    """SB3 ``VecEnv`` whose environments are Ray actors spread over the cluster."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], ray) -> None:
        self._ray = ray
        actor = ray.remote(_EnvActor)
        self.actors = [actor.remote(fn) for fn in env_fns]
        obs_space, act_space = ray.get(self.actors[0].spaces.remote())
        super().__init__(len(self.actors), obs_space, act_space)
        self._pending = None

    def reset(self):
        seeds = self._seeds
        self._ray.get([a.seed.remote(s) for a, s in zip(self.actors, seeds, strict=True)])
        self._reset_seeds()
        results = self._ray.get([a.reset.remote() for a in self.actors])
        self.reset_infos = [info for _, info in results]
        return np.stack([obs for obs, _ in results])

    def step_async(self, actions: np.ndarray) -> None:
        self._pending = [a.step.remote(act) for a, act in zip(self.actors, actions, strict=True)]

    def step_wait(self):
        results = self._ray.get(self._pending)
        self._pending = None
        obs, rewards, dones, infos = zip(*results, strict=True)
        return np.stack(obs), np.array(rewards, dtype=np.float32), np.array(dones), list(infos)

    def close(self) -> None:
        for a in self.actors:
            self._ray.kill(a)

    def _targets(self, indices):
        return [self.actors[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices=None) -> list:
        return self._ray.get([a.call.remote(attr_name) for a in self._targets(indices)])

    def set_attr(self, attr_name: str, value, indices=None) -> None:
        self._ray.get([a.set.remote(attr_name, value) for a in self._targets(indices)])

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list:
        refs = [a.call.remote(method_name, *args, **kwargs) for a in self._targets(indices)]
        return self._ray.get(refs)

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
