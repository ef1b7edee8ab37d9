"""Every controller by name: the one place the emulator, the live sender and the benchmark look.

Swapping a controller anywhere is ``make_controller(name, ...)``. ``fixed:KBPS`` is a constant
rate (for tests and link calibration); ``oracle`` reads the trace's future capacity and is a
reference, not something a sender can ship.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from loki.api import Controller, ControllerConfig, TransportFeedback
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


def _load_learned() -> None:
    # Learned controllers register themselves on import; they are optional at this layer.
    with contextlib.suppress(ImportError):
        import loki.learned  # noqa: F401


def make_controller(
    name: str, config: ControllerConfig | None = None, *, trace: Trace | None = None
) -> Controller:
    """Build a fresh controller; raises ValueError naming the known controllers."""
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
    if name not in _FACTORIES:
        _load_learned()
    if name not in _FACTORIES:
        raise ValueError(f"unknown controller {name!r}; known: {', '.join(controller_names())}")
    return _FACTORIES[name](config, trace)
