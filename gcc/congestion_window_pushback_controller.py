"""Congestion-window pushback: the encoder's rate shrinks while too much data is in flight.

libwebrtc's ``CongestionWindowPushbackController`` (goog_cc, behind the
``WebRTC-CongestionWindow`` field trial, which this project's GCC leaves off): the estimate is
left alone, only the rate handed to the encoder is multiplied by a ratio that falls while the
bytes in flight exceed a data window (x0.95 per update above it, x0.9 above 1.5 times it),
climbs back by x1.05 per update below it and snaps to 1 when the window is nearly empty. It
never pushes below a minimum (30 kbps) unless the estimate itself is lower.

The data window is the loss-based target times (the smallest recent feedback RTT + an accepted
queueing time), averaged with the previous window (``GoogCcNetworkController::
UpdateCongestionWindowSize``). What this guards against is the one thing a rate estimate cannot
see: while nothing is acknowledged (an outage), the estimate holds and the sender keeps filling
the bottleneck's queue, which then takes seconds to drain (or overflows) once the link returns.
"""

from __future__ import annotations

from collections import deque

#: The field trial's ``MinBitrate``: pushback does not go below it on its own.
DEFAULT_MIN_PUSHBACK_TARGET_BPS = 30_000
#: The field trial's ``QueueSize`` as Chrome's field-trial configuration sets it.
DEFAULT_QUEUE_SIZE_MS = 350
#: libwebrtc's smallest data window: two full-size packets.
MIN_DATA_WINDOW_BYTES = 2 * 1500
#: How many reports' RTTs the window's RTT is the smallest of (kMaxFeedbackRttWindow).
MAX_FEEDBACK_RTT_WINDOW = 32


class CongestionWindowPushbackController:
    """The ratio between the target and the rate the encoder gets, from the bytes in flight."""

    def __init__(self, min_pushback_target_bps: int = DEFAULT_MIN_PUSHBACK_TARGET_BPS) -> None:
        self.min_pushback_target_bps = min_pushback_target_bps
        self.outstanding_bytes = 0.0
        self.data_window_bytes: float | None = None
        self.encoding_rate_ratio = 1.0

    def update_outstanding_data(self, outstanding_bytes: float) -> None:
        self.outstanding_bytes = outstanding_bytes

    def set_data_window(self, data_window_bytes: float) -> None:
        self.data_window_bytes = data_window_bytes

    def update_target_bitrate(self, bitrate_bps: int) -> int:
        """The encoder's rate for an estimate of ``bitrate_bps``; call once per update."""
        if not self.data_window_bytes:
            return bitrate_bps
        fill_ratio = self.outstanding_bytes / self.data_window_bytes
        if fill_ratio > 1.5:
            self.encoding_rate_ratio *= 0.9
        elif fill_ratio > 1.0:
            self.encoding_rate_ratio *= 0.95
        elif fill_ratio < 0.1:
            self.encoding_rate_ratio = 1.0
        else:
            self.encoding_rate_ratio = min(self.encoding_rate_ratio * 1.05, 1.0)
        adjusted_bps = int(bitrate_bps * self.encoding_rate_ratio)
        if adjusted_bps < self.min_pushback_target_bps:
            return min(bitrate_bps, self.min_pushback_target_bps)
        return adjusted_bps


class CongestionWindow:
    """The data window of :class:`CongestionWindowPushbackController`, from feedback RTTs."""

    def __init__(self, queue_size_ms: int = DEFAULT_QUEUE_SIZE_MS) -> None:
        self.queue_size_us = queue_size_ms * 1000
        self._feedback_max_rtts_us: deque[int] = deque(maxlen=MAX_FEEDBACK_RTT_WINDOW)
        self.data_window_bytes: float | None = None

    def on_feedback_rtt(self, feedback_max_rtt_us: int) -> None:
        """The largest (feedback time - send time) over a report's received packets."""
        self._feedback_max_rtts_us.append(feedback_max_rtt_us)

    def update(self, loss_based_target_bps: int) -> float | None:
        """The new window for the current loss-based target (None before any RTT)."""
        if not self._feedback_max_rtts_us:
            return None
        time_window_us = min(self._feedback_max_rtts_us) + self.queue_size_us
        window = loss_based_target_bps * time_window_us / 8e6
        if self.data_window_bytes is not None:
            window = (window + self.data_window_bytes) / 2
        self.data_window_bytes = max(float(MIN_DATA_WINDOW_BYTES), window)
        return self.data_window_bytes
