"""stable-baselines3's ``VecEnv`` over Ray actors: PPO's rollouts spread over a cluster.

Each environment lives in one Ray actor and resets itself at the end of an episode, as SB3's
``SubprocVecEnv`` workers do (the last observation goes to ``info["terminal_observation"]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv


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
