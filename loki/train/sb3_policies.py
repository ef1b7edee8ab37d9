"""stable-baselines3 policies on the project's networks (the networks the numpy runtime runs).

* :class:`NormalizedMlpPolicy`: observation normaliser (fixed: the clone's, fitted on GCC's
  trajectories) then SB3's actor and critic MLPs, 2 x 64 tanh each; the actor's trunk and
  action head export to ``actor.trunk`` / ``actor.head`` (``rl``, ``hybrid``).
* :class:`FusionPolicy`: Loki. The actor is the frozen clone trunk and a learner trunk, blended
  by :class:`~fusion.torch_module.DualWeightFusionModule`, then the action head, initialised
  from the clone's head so that at the start the policy's mean action is the clone's; the
  critic has its own 2 x 64 trunk.
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from fusion.torch_module import DualWeightFusionModule
from loki.train.common import HIDDEN, export_linears, load_linears, trunk


class NormalizeObs(BaseFeaturesExtractor):
    """(obs - mean) / std with fixed statistics: the same scaling the numpy runtime applies."""

    def __init__(self, observation_space: spaces.Box, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__(observation_space, features_dim=int(observation_space.shape[0]))
        from loki.nn import MIN_STD

        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        inv = 1.0 / np.maximum(np.asarray(std, dtype=np.float32), MIN_STD)
        self.register_buffer("inv_std", torch.as_tensor(inv, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.mean) * self.inv_std


def mlp_policy_kwargs(mean: np.ndarray, std: np.ndarray, log_std_init: float) -> dict:
    return {
        "features_extractor_class": NormalizeObs,
        "features_extractor_kwargs": {"mean": mean, "std": std},
        "net_arch": {"pi": list(HIDDEN), "vf": list(HIDDEN)},
        "activation_fn": nn.Tanh,
        "log_std_init": log_std_init,
        "ortho_init": True,
    }


class NormalizedMlpPolicy(ActorCriticPolicy):
    """SB3's MLP actor-critic behind the fixed normaliser (kwargs from mlp_policy_kwargs)."""

    def export_actor(self) -> dict[str, np.ndarray]:
        return {
            **export_linears(self.mlp_extractor.policy_net, "actor.trunk"),
            **export_linears(self.action_net, "actor.head"),
        }

    def load_actor(self, params: dict[str, np.ndarray]) -> None:
        load_linears(self.mlp_extractor.policy_net, params, "actor.trunk")
        load_linears(self.action_net, params, "actor.head")

    def actor_parameters(self) -> list[nn.Parameter]:
        """What the critic warm-up freezes (ppo.CriticWarmup)."""
        return [
            *self.mlp_extractor.policy_net.parameters(),
            *self.action_net.parameters(),
            self.log_std,
        ]


class FusionExtractor(nn.Module):
    """Actor: fusion(frozen clone trunk, learner trunk). Critic: its own trunk."""

    def __init__(self, obs_size: int, clone_params: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.clone_trunk = trunk(obs_size)
        load_linears(self.clone_trunk, clone_params, "clone.trunk")
        self.clone_trunk.requires_grad_(False)
        self.learner_trunk = trunk(obs_size)
        self.fusion = DualWeightFusionModule(HIDDEN[-1])
        self.critic_trunk = trunk(obs_size)
        self.latent_dim_pi = HIDDEN[-1]
        self.latent_dim_vf = HIDDEN[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(x), self.forward_critic(x)

    def forward_actor(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            f_c = self.clone_trunk(x)
        return self.fusion(f_c, self.learner_trunk(x))

    def forward_critic(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic_trunk(x)


class FusionPolicy(ActorCriticPolicy):
    """Loki's actor-critic; ``clone_params`` is the exported clone (numpy arrays)."""

    def __init__(self, *args, clone_params: dict[str, np.ndarray], **kwargs) -> None:
        head = clone_params.get("clone.head.0.weight")
        if head is not None and head.shape[0] != 1:
            raise ValueError(
                "loki's action head starts as the clone's one-output head; this clone has a "
                f"{head.shape[0]}-output head (--state-head): train loki from a clone without it"
            )
        self._clone_params = clone_params
        kwargs.setdefault("ortho_init", False)  # keep the clone's and the gates' initialisation
        super().__init__(*args, **kwargs)
        load_linears(self.action_net, clone_params, "clone.head")

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = FusionExtractor(self.features_dim, self._clone_params)

    def actor_parameters(self) -> list[nn.Parameter]:
        """What RL trains on the actor side (the clone trunk stays frozen)."""
        ex = self.mlp_extractor
        return [
            *ex.learner_trunk.parameters(),
            *ex.fusion.parameters(),
            *self.action_net.parameters(),
            self.log_std,
        ]

    def load_learner(self, params: dict[str, np.ndarray], prefix: str) -> None:
        load_linears(self.mlp_extractor.learner_trunk, params, prefix)

    def load_fusion_and_head(self, params: dict[str, np.ndarray]) -> None:
        """The gates and the action head of an exported loki model (to fine-tune it)."""
        self.mlp_extractor.fusion.load(params)
        load_linears(self.action_net, params, "head")

    def export_actor(self) -> dict[str, np.ndarray]:
        ex = self.mlp_extractor
        return {
            **export_linears(ex.clone_trunk, "clone.trunk"),
            **export_linears(ex.learner_trunk, "learner.trunk"),
            **ex.fusion.export(),
            **export_linears(self.action_net, "head"),
        }
