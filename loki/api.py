"""The one controller interface shared by the emulator, the live aiortc sender and the benchmark.

Modelled on libwebrtc's ``NetworkControllerInterface``: the sender side joins the receiver's
transport-wide feedback with its own send history (libwebrtc's ``TransportFeedbackAdapter``) and
hands the controller a :class:`TransportFeedback` per report; RTT and RR loss figures arrive on
their own calls; the controller answers a target send rate in bits per second.

Rules every implementation follows:

* Time is always an argument (``at_us``), never read from a clock, so one controller object runs
  in a simulation, a unit test and a live call alike.
* Times are integer microseconds (``_us``), sizes integer bytes (``_bytes``), rates integer bits
  per second (``_bps``): libwebrtc's ``Timestamp``/``DataSize``/``DataRate`` resolutions.
* Per-packet fields of a report are numpy arrays, not per-packet objects: a report is built once
  per feedback interval and learned controllers vectorise over it; GCC converts it to lists once.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

#: ``arrival_time_us`` of a packet the receiver reported as not received.
NOT_RECEIVED_US = -1
#: ``probe_cluster_id`` of a packet that was not part of a probe.
NO_PROBE = -1


@dataclass(frozen=True, slots=True)
class ProbeCluster:
    """A request to the pacer for a burst at ``target_bps`` (libwebrtc ``ProbeClusterConfig``)."""

    id: int
    at_us: int
    target_bps: int
    duration_us: int = 15_000
    min_probes: int = 5

    @property
    def min_bytes(self) -> int:
        """Bytes the pacer must send for the cluster to be usable (rate x duration)."""
        return (self.target_bps * self.duration_us + 4_000_000) // 8_000_000


@dataclass(frozen=True, slots=True)
class TransportFeedback:
    """One transport-wide feedback report, joined with the sender's record of each packet.

    Packets are in transport sequence order. ``arrival_time_us`` is in the receiver's clock
    (only differences between arrivals are meaningful) or :data:`NOT_RECEIVED_US`;
    ``send_time_us`` and ``feedback_time_us`` are in the sender's clock.
    """

    feedback_time_us: int
    seq: np.ndarray
    send_time_us: np.ndarray
    arrival_time_us: np.ndarray
    size_bytes: np.ndarray
    probe_cluster_id: np.ndarray

    @classmethod
    def from_lists(
        cls,
        feedback_time_us: int,
        seq: list[int],
        send_time_us: list[int],
        arrival_time_us: list[int],
        size_bytes: list[int],
        probe_cluster_id: list[int] | None = None,
    ) -> TransportFeedback:
        """Build a report from plain lists (the emulator's and the live sender's common case)."""
        n = len(seq)
        if not (len(send_time_us) == len(arrival_time_us) == len(size_bytes) == n):
            raise ValueError("TransportFeedback: per-packet lists differ in length")
        probes = (
            np.full(n, NO_PROBE, dtype=np.int64)
            if probe_cluster_id is None
            else np.asarray(probe_cluster_id, dtype=np.int64)
        )
        return cls(
            feedback_time_us=int(feedback_time_us),
            seq=np.asarray(seq, dtype=np.int64),
            send_time_us=np.asarray(send_time_us, dtype=np.int64),
            arrival_time_us=np.asarray(arrival_time_us, dtype=np.int64),
            size_bytes=np.asarray(size_bytes, dtype=np.int64),
            probe_cluster_id=probes,
        )

    def __len__(self) -> int:
        return int(self.seq.shape[0])

    @property
    def received(self) -> np.ndarray:
        """Boolean mask of the packets the receiver got."""
        return self.arrival_time_us != NOT_RECEIVED_US

    @property
    def packets_lost(self) -> int:
        return int(np.count_nonzero(self.arrival_time_us == NOT_RECEIVED_US))


@dataclass(frozen=True, slots=True)
class ControllerConfig:
    """Constraints every controller honours (libwebrtc ``TargetRateConstraints``)."""

    start_bps: int = 300_000
    min_bps: int = 30_000
    max_bps: int = 20_000_000

    def __post_init__(self) -> None:
        if not 0 < self.min_bps <= self.start_bps <= self.max_bps:
            raise ValueError(
                f"ControllerConfig needs 0 < min_bps <= start_bps <= max_bps, got "
                f"{self.min_bps}, {self.start_bps}, {self.max_bps}"
            )

    def clamp(self, rate_bps: float) -> int:
        """Bound a rate to [min_bps, max_bps]; a NaN or infinite rate becomes ``min_bps``."""
        if not math.isfinite(rate_bps):  # math, not numpy: a third of the cost per call
            return self.min_bps
        return int(min(max(rate_bps, self.min_bps), self.max_bps))


class Controller(ABC):
    """A send-rate controller. One object per session; not thread-safe.

    The caller (emulator, live sender, benchmark) drives it with, in time order:
    ``on_feedback`` for every transport-wide feedback report, ``on_rtt`` whenever an RTT
    sample is available, ``on_loss_report`` for RTCP receiver-report loss figures, and
    ``on_process_interval`` about every 25 ms; it reads ``target_bps`` after each call and
    sends ``pop_probe_clusters`` to its pacer. The sender also asks ``skip_frame`` before each
    captured frame and, for a controller that ``uses_outstanding_data``, tells it the bytes in
    flight before each feedback report and tick.
    """

    #: Name used by ``--controller`` and in reports.
    name: ClassVar[str] = "controller"

    def __init__(self, config: ControllerConfig | None = None) -> None:
        self.config = config or ControllerConfig()

    @property
    @abstractmethod
    def target_bps(self) -> int:
        """The rate the encoder and pacer should follow now."""

    @abstractmethod
    def on_feedback(self, report: TransportFeedback) -> int:
        """Take one feedback report; return the new target in bps."""

    def on_rtt(self, rtt_us: int, at_us: int) -> None:  # noqa: B027 - optional hook
        """An RTT sample measured by the transport (RTCP SR/RR or feedback timing)."""

    def on_loss_report(  # noqa: B027 - optional hook
        self, packets_lost: int, packets_expected: int, at_us: int
    ) -> None:
        """RTCP receiver-report loss since the previous report (deltas, not totals)."""

    def on_process_interval(self, at_us: int) -> None:  # noqa: B027 - optional hook
        """A periodic tick (libwebrtc runs its controller every 25 ms)."""

    def pop_probe_clusters(self) -> list[ProbeCluster]:
        """Probe bursts requested since the last call; empty for controllers that never probe."""
        return []

    def skip_frame(self, at_us: int) -> bool:
        """Asked for every captured frame: True to skip encoding it (libwebrtc's
        congestion-window frame drop, :mod:`loki.pushback`); no controller skips by default."""
        return False

    @property
    def skips_frames(self) -> bool:
        """Whether :meth:`skip_frame` can answer True (the live sender then asks it from the
        encoding thread, under a lock it takes for every call into the controller)."""
        return False

    @property
    def uses_outstanding_data(self) -> bool:
        """Whether the caller should call :meth:`on_outstanding_data` (computing it costs the
        emulator a little per tick, so only a controller that reads it is given it)."""
        return False

    def on_outstanding_data(self, outstanding_bytes: int, at_us: int) -> None:  # noqa: B027
        """Bytes sent and not yet covered by any feedback report, told just before each
        ``on_feedback`` and ``on_process_interval`` (libwebrtc's ``UpdateOutstandingData``)."""


class WrappedController(Controller):
    """A controller around another one: every input goes to ``inner``; a subclass changes what
    comes out (a scaled target, a logged decision). The inner controller keeps its own state
    and its probes."""

    def __init__(self, inner: Controller) -> None:
        super().__init__(inner.config)
        self.inner = inner

    @property
    def target_bps(self) -> int:
        return self.inner.target_bps

    def on_feedback(self, report: TransportFeedback) -> int:
        self.inner.on_feedback(report)
        return self.target_bps

    def on_rtt(self, rtt_us: int, at_us: int) -> None:
        self.inner.on_rtt(rtt_us, at_us)

    def on_loss_report(self, packets_lost: int, packets_expected: int, at_us: int) -> None:
        self.inner.on_loss_report(packets_lost, packets_expected, at_us)

    def on_process_interval(self, at_us: int) -> None:
        self.inner.on_process_interval(at_us)

    def pop_probe_clusters(self) -> list[ProbeCluster]:
        return self.inner.pop_probe_clusters()

    def skip_frame(self, at_us: int) -> bool:
        return self.inner.skip_frame(at_us)

    @property
    def skips_frames(self) -> bool:
        return self.inner.skips_frames

    @property
    def uses_outstanding_data(self) -> bool:
        return self.inner.uses_outstanding_data

    def on_outstanding_data(self, outstanding_bytes: int, at_us: int) -> None:
        self.inner.on_outstanding_data(outstanding_bytes, at_us)
