"""Training of the learned controllers (needs the ``train`` extra: torch, stable-baselines3).

One module per model, each readable top to bottom: :mod:`loki.train.clone` (DAgger),
:mod:`loki.train.rl`, :mod:`loki.train.loki_fusion`, :mod:`loki.train.hybrid` (PPO). The
command is ``loki train clone|rl|loki|hybrid`` (:mod:`loki.train.cli`).
"""
