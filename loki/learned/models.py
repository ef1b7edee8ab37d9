"""Load exported models and build controllers from them; the registry's learned factories.

A model is a folder ``loki/models/<name>/`` with ``model.npz`` (weights, the input
normaliser, the guard's training range and a JSON ``meta`` string naming the model's ``kind``)
and ``card.md``. :func:`controller_from_model` builds a fresh controller from any such file (a
freshly trained one under ``--out``, say); the registry uses the committed ones.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loki.api import ControllerConfig
from loki.features import FEATURE_NAMES, HISTORY
from loki.learned.controller import (
    AnchoredController,
    HybridController,
    LearnedController,
    Normalize,
    Policy,
    RatioController,
)
from loki.learned.fault_floor import FaultFloor
from loki.learned.guard import InputGuard
from loki.learned.min_target import MinTarget
from loki.learned.policies import (
    STATE_HEAD_OUTPUTS,
    FusionPolicy,
    MlpPolicy,
    state_head_decoder,
)
from loki.learned.stall_risk import PARAM_KEYS as RISK_KEYS
from loki.learned.stall_risk import RiskAdjustedController, StallRisk
from loki.nn import Normalizer, load_model

MODEL_DIR = Path(__file__).resolve().parent.parent / "models"
MODEL_FILE = "model.npz"
GUARD_LOW_KEY = "obs_low"
GUARD_HIGH_KEY = "obs_high"
META_KEY = "meta"
#: Meta key of the lowest target the model's controller asks for (bps); absent: the
#: config's own minimum. See :func:`with_min_target`.
MIN_TARGET_KEY = "min_target_bps"
#: Meta key of the queueing delay (ms) above which the minimum target does not hold.
MIN_TARGET_QUEUE_KEY = "min_target_queue_ms"
DEFAULT_MIN_TARGET_QUEUE_MS = 200.0
#: Bounds of a minimum target: above the config's default minimum, at most its start rate.
MIN_TARGET_RANGE_BPS = (ControllerConfig().min_bps, ControllerConfig().start_bps)
#: Meta key of how a clone's state head becomes an action (a name of STATE_HEAD_DECODERS);
#: absent: the argmax. See :func:`with_decode`.
DECODE_KEY = "state_head_decode"
DEFAULT_DECODE = "argmax"
#: Registry name -> model folder under MODEL_DIR.
REGISTERED = {"gcc-clone": "gcc-clone", "rl": "rl", "loki": "loki", "hybrid": "hybrid"}
KINDS = ("clone", "rl", "loki", "hybrid")


@dataclass(frozen=True)
class LoadedModel:
    """A model's stateless parts, shared by every controller built from it."""

    kind: str
    policy: Policy
    normalize: Normalize | None
    guard_low: np.ndarray | None
    guard_high: np.ndarray | None
    meta: dict
    #: The stall-risk layer of an online update (``loki train online --method risk``), if any.
    risk: StallRisk | None = None


def read_meta(params: dict[str, np.ndarray]) -> dict:
    return json.loads(str(params[META_KEY])) if META_KEY in params else {}


def load_learned(path: str) -> LoadedModel:
    """The model in ``path``, read once per version of the file (keyed on its mtime and size)."""
    st = os.stat(path)
    return _load_learned(path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _load_learned(path: str, mtime_ns: int, size_bytes: int) -> LoadedModel:
    params = load_model(path)
    meta = read_meta(params)
    kind = meta.get("kind")
    norm = Normalizer.from_params(params)
    if kind == "clone":
        policy: Policy = MlpPolicy(
            params, "clone", norm, decode=meta.get(DECODE_KEY, DEFAULT_DECODE)
        )
    elif kind in ("rl", "hybrid"):
        policy = MlpPolicy(params, "actor", norm)
    elif kind == "loki":
        policy = FusionPolicy(params, norm)
    else:
        raise ValueError(f"{path}: unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    risk = None
    if "risk" in meta:
        missing = [k for k in RISK_KEYS if k not in params]
        if missing:
            raise ValueError(f"{path}: its meta names a stall-risk layer but lacks {missing}")
        r = meta["risk"]
        risk = StallRisk(
            params, r["k"], r["mean_risk"], r.get("smoothing", 1.0), r.get("level", 1.0)
        )
    return LoadedModel(
        kind=kind,
        policy=policy,
        normalize=None,  # folded into the policy's first layer
        guard_low=params.get(GUARD_LOW_KEY),
        guard_high=params.get(GUARD_HIGH_KEY),
        meta=meta,
        risk=risk,
    )


def controller_from_model(
    path: str | os.PathLike[str],
    config: ControllerConfig | None = None,
    *,
    name: str = "",
    fault_floor: bool = True,
) -> LearnedController | RiskAdjustedController:
    """A fresh controller running the model in ``path``, with GCC's floor through faults (and,
    for a model updated with ``--method risk``, its stall-risk layer around it).

    ``fault_floor=False`` runs the network alone (to measure what the floor changes).
    """
    m = load_learned(str(Path(path).resolve()))
    cls: type[LearnedController] = RatioController
    if m.kind == "hybrid":
        cls = HybridController
    elif m.meta.get("anchor") == "gcc":
        cls = AnchoredController
    if m.guard_low is not None and m.guard_low.size != cls.obs_size:
        raise ValueError(
            f"{path}: the model takes {m.guard_low.size} inputs, but the observation has "
            f"{cls.obs_size} ({len(FEATURE_NAMES)} features x {HISTORY} reports): it was "
            "trained on another feature set; retrain it with 'loki train'"
        )
    ctl = cls(
        config,
        policy=m.policy,
        normalize=m.normalize,
        guard=InputGuard(m.guard_low, m.guard_high),
        fault_floor=FaultFloor() if fault_floor else None,
        min_target=_min_target(m.meta, config or ControllerConfig()),
    )
    ctl.name = name or m.kind  # type: ignore[misc]
    if m.risk is not None:
        return RiskAdjustedController(ctl, m.risk)
    return ctl


def _min_target(meta: dict, config: ControllerConfig) -> MinTarget | None:
    """The model's gated minimum target (:func:`with_min_target`), if it has one."""
    floor = meta.get(MIN_TARGET_KEY)
    if floor is None or floor <= config.min_bps:
        return None  # a caller's own minimum at or above it already holds
    return MinTarget(int(floor), config.min_bps, float(meta[MIN_TARGET_QUEUE_KEY]))


def without_risk_layer(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Write the model in ``src`` without its stall-risk layer (if it has one) to ``dst``.

    The layer is fitted on the network's own decisions, and the online demonstration starts
    from the network alone, so both need the network without whatever layer ships around it
    (the minimum target of :func:`with_min_target` included). The network's arrays are copied
    unchanged."""
    params = load_model(src)
    meta = read_meta(params)
    meta.pop("risk", None)
    meta.pop(MIN_TARGET_KEY, None)
    meta.pop(MIN_TARGET_QUEUE_KEY, None)
    if meta.get("online", {}).get("method") == "risk":
        meta.pop("online")
    return _save(dst, {k: v for k, v in params.items() if k not in RISK_KEYS}, meta)


def with_risk_level(src: str | os.PathLike[str], dst: str | os.PathLike[str], level: float) -> Path:
    """Write the model in ``src`` with its stall-risk layer's level set to ``level`` to ``dst``.

    Every array is copied unchanged: the level moves a fitted layer along its network's
    bitrate-for-stall curve without refitting it (a refit logs the network anew, with whatever
    fault floor the code has then; loki/LEARNING.md, session 11)."""
    from loki.learned.stall_risk import check_level

    check_level(level)
    params = load_model(src)
    meta = read_meta(params)
    if "risk" not in meta:
        raise ValueError(f"{src}: the model has no stall-risk layer to set the level of")
    risk = {k: v for k, v in meta["risk"].items() if k != "level"}
    if level != 1.0:
        risk["level"] = float(level)
    meta["risk"] = risk
    return _save(dst, params, meta)


def with_min_target(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    min_target_bps: int | None,
    queue_ms: float = DEFAULT_MIN_TARGET_QUEUE_MS,
) -> Path:
    """Write the model in ``src`` to ``dst`` with a gated minimum target: its controller asks
    for at least ``min_target_bps`` while the path shows less than ``queue_ms`` of queueing
    delay (None: no minimum of its own). Why, and why gated: :mod:`loki.learned.min_target`.
    Every array is copied unchanged."""
    lo, hi = MIN_TARGET_RANGE_BPS
    if min_target_bps is not None and not lo < min_target_bps <= hi:
        raise ValueError(
            f"--min-target-kbps must be above {lo / 1000:g} and at most {hi / 1000:g} kbps "
            f"(the default minimum and start rate), got {min_target_bps / 1000:g}"
        )
    if not queue_ms > 0:
        raise ValueError(f"--min-target-queue-ms must be > 0, got {queue_ms:g}")
    params = load_model(src)
    meta = read_meta(params)
    meta.pop(MIN_TARGET_KEY, None)
    meta.pop(MIN_TARGET_QUEUE_KEY, None)
    if min_target_bps is not None:
        meta[MIN_TARGET_KEY] = int(min_target_bps)
        meta[MIN_TARGET_QUEUE_KEY] = float(queue_ms)
    return _save(dst, params, meta)


def with_decode(src: str | os.PathLike[str], dst: str | os.PathLike[str], decode: str) -> Path:
    """Write the state-head clone in ``src`` to ``dst`` decoded by ``decode`` (a name of
    :data:`loki.learned.policies.STATE_HEAD_DECODERS`); every array is copied unchanged."""
    state_head_decoder(decode)  # refuses an unknown name before anything is read
    params = load_model(src)
    meta = read_meta(params)
    if meta.get("kind") != "clone" or params["clone.head.0.weight"].shape[0] != STATE_HEAD_OUTPUTS:
        raise ValueError(f"{src}: only a state-head clone has a decoding to choose")
    meta[DECODE_KEY] = decode
    return _save(dst, params, meta)


def _save(dst: str | os.PathLike[str], params: dict[str, np.ndarray], meta: dict) -> Path:
    """``params`` with ``meta`` as the model's meta, written to a temporary name and renamed
    (``dst`` may be the file the arrays were read from)."""
    kept = {k: v for k, v in params.items() if k != META_KEY}
    kept[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    out = Path(dst)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **kept)
    tmp.replace(out)
    return out


def model_path(name: str) -> Path:
    return MODEL_DIR / REGISTERED[name] / MODEL_FILE


def make_registered(name: str, config: ControllerConfig | None) -> LearnedController:
    path = model_path(name)
    if not path.is_file():
        raise ValueError(
            f"controller {name!r} has no trained model at {path}; train it with "
            f"'loki train {'clone' if name == 'gcc-clone' else name}'"
        )
    return controller_from_model(path, config, name=name)
