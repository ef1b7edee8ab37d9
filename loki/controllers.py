"""Every controller by name: the one place the emulator, the live sender and the benchmark look.

Swapping a controller anywhere is ``make_controller(name, ...)``. ``fixed:KBPS`` is a constant
rate (for tests and link calibration); ``oracle`` reads the trace's future capacity and is a
reference, not something a sender can ship; ``scaled:FACTOR:NAME`` sends FACTOR x what the
controller NAME asks for (at a few factors, that controller's own bitrate-for-stall curve: the
yardstick another controller has to beat, since moving along a curve is a choice of operating
point, not a better estimator); ``pushback:[drop:][MIN_KBPS:]NAME`` is NAME behind libwebrtc's
congestion-window pushback (:mod:`loki.pushback`), a sender stage measured as a reference
(loki/LEARNING.md, session 13).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from loki.api import Controller, ControllerConfig, TransportFeedback, WrappedController
from traces.trace import BYTES_PER_OPPORTUNITY, Trace

#: How far ahead the oracle looks, and the share of capacity it targets.
ORACLE_HORIZON_MS = 500
ORACLE_SHARE = 0.95


class FixedRateController(Controller):
    """Always answers the same rate: a control for experiments, not a congestion controller."""

    name = "fixed"

    def __init__(self, rate_bps: int, config: ControllerConfig | None = None) -> None:
        super().__init__(config)
        self._rate_bps = self.config.clamp(rate_bps)

    @property
    def target_bps(self) -> int:
        return self._rate_bps

    def on_feedback(self, report: TransportFeedback) -> int:
        return self._rate_bps


class OracleController(Controller):
    """Targets a share of the capacity the trace will offer over the next half second."""

    name = "oracle"

    def __init__(self, trace: Trace, config: ControllerConfig | None = None) -> None:
        super().__init__(config)
        self._trace = trace
        self._rate_bps = self._rate_at(0)

    def _rate_at(self, at_ms: int) -> int:
        n = self._trace.opportunities_between(at_ms, at_ms + ORACLE_HORIZON_MS)
        cap_bps = n * BYTES_PER_OPPORTUNITY * 8000.0 / ORACLE_HORIZON_MS
        return self.config.clamp(ORACLE_SHARE * cap_bps)

    @property
    def target_bps(self) -> int:
        return self._rate_bps

    def on_feedback(self, report: TransportFeedback) -> int:
        self._rate_bps = self._rate_at(report.feedback_time_us // 1000)
        return self._rate_bps

    def on_process_interval(self, at_us: int) -> None:
        self._rate_bps = self._rate_at(at_us // 1000)


class ScaledController(WrappedController):
    """Another controller decides on every input; the target is ``factor`` x its target.

    The inner controller is not told: it measures the scaled stream (GCC's acknowledged rate,
    a network's received-rate features), as it would behind a sender that applies a factor.
    Probes stay the inner controller's. ``scaled:FACTOR:gcc`` at a few factors is GCC's own
    bitrate-for-stall curve, and ``scaled:FACTOR:loki`` the shipped model's: an update or a
    new model beats them only where it sits below those curves.
    """

    name = "scaled"

    def __init__(self, inner: Controller, factor: float, config: ControllerConfig | None = None):
        super().__init__(inner)
        if config is not None:
            self.config = config
        if not 0 < factor < float("inf"):
            raise ValueError(f"scaled needs a factor > 0, got {factor}")
        self.factor = factor

    @property
    def target_bps(self) -> int:
        return self.config.clamp(self.inner.target_bps * self.factor)

    @property
    def fallbacks(self) -> int:
        """The inner controller's guard fallbacks (0 for one without a guard)."""
        return int(getattr(self.inner, "fallbacks", 0))


def _make_gcc(config: ControllerConfig, trace: Trace | None) -> Controller:
    from gcc.goog_cc_network_control import GoogCcNetworkController

    return GoogCcNetworkController(config)


def _make_oracle(config: ControllerConfig, trace: Trace | None) -> Controller:
    if trace is None:
        raise ValueError("the oracle controller needs the trace it runs on")
    return OracleController(trace, config)


Factory = Callable[[ControllerConfig, Trace | None], Controller]

_FACTORIES: dict[str, Factory] = {
    "gcc": _make_gcc,
    "oracle": _make_oracle,
}


def register_controller(name: str, factory: Factory) -> None:
    """Add a controller under ``name`` (later modules register the learned controllers)."""
    _FACTORIES[name] = factory


def controller_names() -> list[str]:
    _load_learned()
    return [*sorted(_FACTORIES), "fixed:KBPS"]


def _known() -> str:
    # scaled:FACTOR:NAME and pushback:NAME are references, not controllers of their own: loops
    # over controller_names() (the fault and fuzz suites) leave them out; error messages offer them.
    return ", ".join([*controller_names(), "scaled:FACTOR:NAME", "pushback:[drop:][MIN_KBPS:]NAME"])


def _load_learned() -> None:
    # Learned controllers register themselves on import; they are optional at this layer.
    with contextlib.suppress(ImportError):
        import loki.learned  # noqa: F401


#: A name ending so is the path of an exported model (``loki train`` writes ``model.npz``).
MODEL_SUFFIX = ".npz"


def _from_model_file(path: str, config: ControllerConfig) -> Controller:
    """A learned controller from an exported model; every failure is a ValueError naming it."""
    from pathlib import Path

    if not Path(path).is_file():
        raise ValueError(f"no such model file: {path}")
    from loki.learned.models import controller_from_model

    try:
        return controller_from_model(path, config)
    except Exception as e:  # a corrupt or foreign .npz: what failed is the message
        why = str(e) if path in str(e) else f"{path}: {e}"
        raise ValueError(f"not a usable model: {why}") from e


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def make_controller(
    name: str, config: ControllerConfig | None = None, *, trace: Trace | None = None
) -> Controller:
    """Build a fresh controller by registry name or model path; raises ValueError naming the
    known controllers (or what is wrong with the model file)."""
    config = config or ControllerConfig()
    if name.startswith("fixed:"):
        try:
            kbps = float(name.split(":", 1)[1])
        except ValueError:
            raise ValueError(
                f"fixed controller needs a rate in kbps: 'fixed:2500', got {name!r}"
            ) from None
        if not kbps > 0:
            raise ValueError(f"fixed controller rate must be > 0 kbps, got {name!r}")
        return FixedRateController(int(kbps * 1000), config)
    if name.startswith("scaled:"):
        parts = name.split(":", 2)
        try:
            factor = float(parts[1])
            inner_name = parts[2]
        except (ValueError, IndexError):
            raise ValueError(
                f"scaled needs a factor and a controller: 'scaled:0.85:gcc', got {name!r}"
            ) from None
        if not 0 < factor < float("inf"):
            raise ValueError(f"scaled needs a factor > 0, got {name!r}")
        return ScaledController(make_controller(inner_name, config, trace=trace), factor, config)
    if name.startswith("pushback:"):
        from gcc.congestion_window_pushback_controller import DEFAULT_MIN_PUSHBACK_TARGET_BPS
        from loki.pushback import PushbackController

        inner_name = name.split(":", 1)[1]
        min_bps = DEFAULT_MIN_PUSHBACK_TARGET_BPS
        drop_frames = inner_name.startswith("drop:")
        if drop_frames:
            inner_name = inner_name[len("drop:") :]
        head, sep, rest = inner_name.partition(":")
        min_kbps = _float_or_none(head) if sep else None
        if min_kbps is not None:
            if not 0 < min_kbps < float("inf"):
                raise ValueError(f"pushback's minimum must be > 0 kbps, got {name!r}")
            min_bps, inner_name = int(min_kbps * 1000), rest
        if not inner_name:
            raise ValueError(
                f"pushback needs a controller: 'pushback:loki' or 'pushback:374:loki', got {name!r}"
            )
        return PushbackController(
            make_controller(inner_name, config, trace=trace),
            config,
            min_bps=min_bps,
            drop_frames=drop_frames,
        )
    if name.endswith(MODEL_SUFFIX):
        return _from_model_file(name, config)
    if name not in _FACTORIES:
        _load_learned()
    if name not in _FACTORIES:
        raise ValueError(f"unknown controller {name!r}; known: {_known()}")
    return _FACTORIES[name](config, trace)
