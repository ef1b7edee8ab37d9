"""Experience logs: what a deployed learned controller saw, did and got, one file per session.

Online learning (issue 8) needs, per decision, the observation, the action, the behaviour
policy's log-probability of it (so an update can weigh or correct for how the data was
collected), Loki's fusion gates (to see where the learner is trusted) and the signals a reward
is built from. The sender itself only knows what feedback tells it (received rate, queueing
delay, loss, RTT); the emulator also knows the receiver's ground truth (rendered bytes, frozen
time), so those fields are NaN in live logs.

Format (version :data:`LOG_VERSION`): one JSON header line (version, model hash, sizes, the
record layout), then fixed-size little-endian records of :func:`record_dtype`. Append-only and
flushed every :data:`FLUSH_INTERVAL_US` of session time, so a crashed sender loses at most the
last second; a torn last record is dropped on reading.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.dual_weight import GATE_C, GATE_R
from loki.api import Controller, TransportFeedback, WrappedController
from loki.features import FEATURE_NAMES, N_FEATURES, OBS_SIZE
from loki.learned.controller import LearnedController
from loki.learned.policies import FusionPolicy
from loki.nn import Normalizer, load_model, sigmoid

LOG_VERSION = 1
LOG_SUFFIX = ".explog"
MAGIC = "loki-experience"
#: Records are written to the OS at least this often (session time).
FLUSH_INTERVAL_US = 1_000_000
#: Ground-truth reward terms the emulator fills in (NaN in live logs), see loki.train.env.
TRUTH_FIELDS = ("utilisation", "frozen_share", "excess_delay_s", "loss_truth", "change_log2")
_RECV = FEATURE_NAMES.index("recv_rate")
_QDELAY = FEATURE_NAMES.index("queue_delay")
_LOSS = FEATURE_NAMES.index("loss")
_RTT = FEATURE_NAMES.index("rtt")
VECTOR_FIELDS = ("obs", "gates")
#: Exploration draws per numpy call.
NOISE_BLOCK = 1024
_NO_TRUTH = (math.nan,) * len(TRUTH_FIELDS)


SCALAR_FIELDS = (
    "target_bps",
    "action",
    "mean_action",
    "logp",
    "fallback",
    "recv_log2mbps",
    "queue_delay_100ms",
    "loss",
    "rtt_100ms",
    *TRUTH_FIELDS,
)


def record_layout(obs_size: int, gate_size: int) -> list[tuple[str, int]]:
    """Fields after ``at_us`` (int64), all float32, with their lengths."""
    return [*((f, 1) for f in SCALAR_FIELDS), ("obs", obs_size), ("gates", gate_size)]


def record_dtype(obs_size: int, gate_size: int) -> np.dtype:
    """One decision: time, observation, action, its log-probability, gates, signals."""
    fields: list[tuple] = [("at_us", "<i8")]
    for name, n in record_layout(obs_size, gate_size):
        fields.append((name, "<f4", (n,)) if name in VECTOR_FIELDS else (name, "<f4"))
    return np.dtype(fields)


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ExperienceWriter:
    """Append-only writer of one session's log."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        model_sha256: str = "",
        obs_size: int = OBS_SIZE,
        gate_size: int = 0,
        explore_std: float = 0.0,
        meta: dict | None = None,
    ) -> None:
        self.path = Path(path)
        self.dtype = record_dtype(obs_size, gate_size)
        header = {
            "magic": MAGIC,
            "version": LOG_VERSION,
            "model_sha256": model_sha256,
            "obs_size": obs_size,
            "gate_size": gate_size,
            "explore_std": explore_std,
            "record_bytes": self.dtype.itemsize,
            "fields": list(self.dtype.names),
            "meta": meta or {},
        }
        self._f = open(self.path, "wb")  # noqa: SIM115 - held for the session's life
        self._f.write((json.dumps(header, sort_keys=True) + "\n").encode())
        self._f.flush()
        # Records are packed by hand (struct for the scalars, raw bytes for the vectors):
        # filling a numpy record field by field costs about ten times more per decision.
        self._head = struct.Struct(f"<q{len(SCALAR_FIELDS)}f")
        self._defaults = {f: (math.nan if f in TRUTH_FIELDS else 0.0) for f in SCALAR_FIELDS}
        self._obs_size = obs_size
        self._zero_gates = bytes(4 * gate_size)
        self._gate_size = gate_size
        self._last_flush_us: int | None = None
        self.records = 0

    def write(
        self,
        at_us: int,
        obs: np.ndarray | None = None,
        gates: np.ndarray | None = None,
        **scalars: float,
    ) -> None:
        """One record from named fields (absent: 0, or NaN for the ground-truth terms)."""
        d = self._defaults
        self.write_packed(
            at_us,
            [float(scalars.get(f, d[f])) for f in SCALAR_FIELDS],
            None if obs is None else np.asarray(obs, dtype="<f4"),
            None if gates is None else np.asarray(gates, dtype="<f4"),
        )

    def write_packed(
        self,
        at_us: int,
        scalars: list[float],
        obs: np.ndarray | None,
        gates: np.ndarray | None,
    ) -> None:
        """One record, scalars in :data:`SCALAR_FIELDS` order (the per-decision fast path)."""
        head = self._head.pack(at_us, *scalars)
        o = bytes(4 * self._obs_size) if obs is None else obs.astype("<f4", copy=False).tobytes()
        g = self._zero_gates if gates is None else gates.astype("<f4", copy=False).tobytes()
        if len(o) != 4 * self._obs_size or len(g) != len(self._zero_gates):
            raise ValueError("experience record: observation or gates of the wrong size")
        self._f.write(head + o + g)
        self.records += 1
        if self._last_flush_us is None or at_us - self._last_flush_us >= FLUSH_INTERVAL_US:
            self._f.flush()
            self._last_flush_us = at_us

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            self._f.close()


@dataclass(frozen=True)
class ExperienceLog:
    header: dict
    records: np.ndarray
    path: Path


def read_log(path: str | os.PathLike[str]) -> ExperienceLog:
    """A log's header and records; a torn final record (crash mid-write) is dropped."""
    with open(path, "rb") as f:
        line = f.readline()
        header = json.loads(line)
        if header.get("magic") != MAGIC:
            raise ValueError(f"{path}: not an experience log")
        if header["version"] != LOG_VERSION:
            raise ValueError(f"{path}: log version {header['version']}, expected {LOG_VERSION}")
        body = f.read()
    dtype = record_dtype(header["obs_size"], header["gate_size"])
    n = len(body) // dtype.itemsize
    recs = np.frombuffer(body[: n * dtype.itemsize], dtype=dtype)
    return ExperienceLog(header, recs, Path(path))


def find_logs(dirs: list[str | os.PathLike[str]]) -> list[Path]:
    out: list[Path] = []
    for d in dirs:
        p = Path(d)
        out += [p] if p.is_file() else sorted(p.rglob(f"*{LOG_SUFFIX}"))
    return out


class FusedForward:
    """Loki's forward pass that keeps the gates it computes, built from the model's weights.

    Same maths as :class:`~loki.learned.policies.FusionPolicy` (checked in the tests); it
    exists so that logging the gates costs nothing extra per decision, without reaching into
    FusionPolicy's private, latency-tuned layout.
    """

    def __init__(self, model: str | os.PathLike[str]) -> None:
        params = load_model(model)
        norm = Normalizer.from_params(params)
        c1, c2 = (params[f"clone.trunk.{i}.weight"] for i in (0, 1))
        r1, r2 = (params[f"learner.trunk.{i}.weight"] for i in (0, 1))
        self.h = int(c2.shape[0])
        w1 = np.concatenate([c1, r1]) * norm.inv_std[None, :]
        b1 = np.concatenate([params["clone.trunk.0.bias"], params["learner.trunk.0.bias"]])
        self._w1 = np.ascontiguousarray(w1, dtype=np.float32)
        self._b1 = (b1 - self._w1 @ norm.mean).astype(np.float32)
        w2 = np.zeros((2 * self.h, c1.shape[0] + r1.shape[0]), dtype=np.float32)
        w2[: self.h, : c1.shape[0]] = c2
        w2[self.h :, c1.shape[0] :] = r2
        self._w2 = w2
        self._b2 = np.concatenate([params["clone.trunk.1.bias"], params["learner.trunk.1.bias"]])
        self._wg = np.ascontiguousarray(
            np.concatenate([params[f"{GATE_C}.weight"], params[f"{GATE_R}.weight"]])
        )
        self._bg = np.concatenate([params[f"{GATE_C}.bias"], params[f"{GATE_R}.bias"]])
        self._wh = np.ascontiguousarray(params["head.0.weight"][0])
        self._bh = float(params["head.0.bias"][0])

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """(action in [-1, 1], gates [w_c, w_r])."""
        f = np.tanh(self._w2 @ np.tanh(self._w1 @ x + self._b1) + self._b2)
        g = sigmoid(self._wg @ f + self._bg)
        h = self.h
        y = float(self._wh @ (g[:h] * f[:h] + g[h:] * f[h:])) + self._bh
        return min(max(y, -1.0), 1.0), g


class _NoisyPolicy:
    """Wraps a deterministic policy: Gaussian exploration in action space, clipped to [-1, 1].

    The log-probability is that of the unclipped Gaussian draw, the density an update can use
    (clipping is the controller's business and does not change which draw was taken). With a
    :class:`FusedForward` the mean action and the gates come from one pass; otherwise the gates
    of a FusionPolicy are computed through its public API (one more forward pass).
    """

    def __init__(self, policy, std: float, seed: int, fused: FusedForward | None = None) -> None:
        self.policy = policy
        self.fused = fused
        self.std = std
        self.rng = np.random.default_rng(seed)
        self.mean = 0.0
        self.action = 0.0
        self.logp = 0.0
        self.gates: np.ndarray | None = None
        self._log_norm = math.log(std * math.sqrt(2 * math.pi)) if std > 0 else 0.0
        # Noise drawn in blocks: one numpy call per NOISE_BLOCK decisions, not per decision.
        self._eps: list[float] = []
        self._k = 0

    def __call__(self, x: np.ndarray) -> float:
        if self.fused is not None:
            self.mean, self.gates = self.fused(x)
        else:
            pol = self.policy
            self.mean = float(pol(x))
            if isinstance(pol, FusionPolicy):
                self.gates = np.concatenate(pol.gates(x))
        if self.std > 0:
            if self._k == len(self._eps):
                self._eps = self.rng.standard_normal(NOISE_BLOCK).tolist()
                self._k = 0
            eps = self._eps[self._k]
            self._k += 1
            self.action = self.mean + self.std * eps
            self.logp = -0.5 * eps * eps - self._log_norm
        else:
            self.action, self.logp = self.mean, 0.0
        return min(max(self.action, -1.0), 1.0)


class LoggingController(WrappedController):
    """Any controller, with each decision of a learned one written to an experience log.

    Pass it wherever a controller goes (the emulator's Session, ``rtc.sender.attach``). For a
    learned controller it logs observation, action, log-probability, fusion gates and the
    feedback-side signals; ``explore_std`` > 0 adds Gaussian exploration (the data an update
    learns from). ``truth_probe``, when set (emulator only), is called at each decision and
    returns the ground-truth reward terms of the interval since the previous decision.
    """

    def __init__(
        self,
        inner: Controller,
        writer: ExperienceWriter,
        *,
        explore_std: float = 0.0,
        seed: int = 0,
        fused: FusedForward | None = None,
    ) -> None:
        super().__init__(inner)
        self.name = inner.name  # type: ignore[misc]
        self.writer = writer
        self.truth_probe = None
        # A model with a stall-risk layer wraps its learned controller: the decisions, the
        # observation and the policy are the learned one's; the target is the wrapper's.
        self._core = getattr(inner, "learned", inner)
        self._learned = isinstance(self._core, LearnedController)
        self._noisy: _NoisyPolicy | None = None
        self._fusion: FusionPolicy | None = None
        if self._learned and self._core.policy is not None:
            base = self._core.policy
            self._fusion = base if isinstance(base, FusionPolicy) else None
            self._noisy = _NoisyPolicy(
                base, explore_std, seed, fused if self._fusion is not None else None
            )
            self._core.policy = self._noisy

    def on_feedback(self, report: TransportFeedback) -> int:
        inner = self.inner
        if not self._learned:
            return inner.on_feedback(report)
        core = self._core
        before = core.decisions
        fallbacks = core.fallbacks
        target = inner.on_feedback(report)
        if core.decisions != before:
            self._log(report.feedback_time_us, core.fallbacks != fallbacks)
        return target

    def _log(self, at_us: int, fell_back: bool) -> None:
        inner = self.inner
        obs = self._core.obs
        base = len(obs) - N_FEATURES
        noisy = self._noisy
        nan = math.nan
        took = noisy is not None and not fell_back
        truth = self.truth_probe() if self.truth_probe is not None else _NO_TRUTH
        self.writer.write_packed(
            at_us,
            [
                inner.target_bps,
                noisy.action if took else nan,
                noisy.mean if took else nan,
                noisy.logp if took else nan,
                1.0 if fell_back else 0.0,
                obs[base + _RECV],
                obs[base + _QDELAY],
                obs[base + _LOSS],
                obs[base + _RTT],
                *truth,
            ],
            obs,
            noisy.gates if took and self._fusion is not None else None,
        )

    def close(self) -> None:
        """End of the session: flush and close the log."""
        self.writer.close()


def open_session_log(
    inner: Controller,
    directory: str | os.PathLike[str],
    session_id: str,
    *,
    model: str | os.PathLike[str] | None = None,
    explore_std: float = 0.0,
    seed: int = 0,
) -> LoggingController:
    """A logging wrapper for one live session: pass it to ``rtc.sender.attach``, close() at end.

    ``model`` is the file the controller runs (its hash goes in the header, so an update can
    tell on-policy logs from logs of older models).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    writer = ExperienceWriter(
        d / f"{session_id}{LOG_SUFFIX}",
        model_sha256=file_sha256(model) if model is not None else "",
        gate_size=gate_size_of(inner),
        explore_std=explore_std,
        meta={"session": session_id, "controller": inner.name},
    )
    fused = FusedForward(model) if model is not None and gate_size_of(inner) else None
    return LoggingController(inner, writer, explore_std=explore_std, seed=seed, fused=fused)


def gate_size_of(ctl: Controller) -> int:
    pol = getattr(ctl, "policy", None)
    return 2 * pol.feature_size if isinstance(pol, FusionPolicy) else 0


def log_emulated_session(job: tuple) -> str:
    """Run one emulated session of ``model`` on ``spec``, logging every decision to ``path``.

    ``job`` = (EpisodeSpec, model path, log path, explore_std, seed): a picklable job for
    :class:`loki.train.parallel.Executor`. The ground-truth reward terms come from the same
    :class:`loki.train.env.IntervalMeter` the training environment uses.
    """
    from loki.emu.session import Session, SessionConfig
    from loki.learned.models import controller_from_model
    from loki.train.env import IntervalMeter

    spec, model, path, explore_std, seed = job
    inner = controller_from_model(model)
    writer = ExperienceWriter(
        path,
        model_sha256=file_sha256(model),
        gate_size=gate_size_of(inner),
        explore_std=explore_std,
        meta={"trace": spec.trace_path, "offset_ms": spec.offset_ms, "seed": spec.seed},
    )
    fused = FusedForward(model) if gate_size_of(inner) else None
    ctl = LoggingController(inner, writer, explore_std=explore_std, seed=seed, fused=fused)
    session = Session(ctl, spec.link(), SessionConfig(duration_s=spec.duration_s, seed=spec.seed))
    meter = IntervalMeter(session)
    last = [inner.target_bps]

    def probe() -> tuple[float, ...]:
        # Called before the decision applies: the interval just ended ran at last[0].
        st = meter.measure(last[0], inner.target_bps)
        last[0] = inner.target_bps
        return (st.utilisation, st.frozen_share, st.excess_delay_s, st.loss, st.change_log2)

    ctl.truth_probe = probe
    try:
        session.run()
    finally:
        writer.close()
    return str(path)
