"""Any controller behind libwebrtc's congestion-window pushback (``pushback:NAME``).

The pushback stage (:mod:`gcc.congestion_window_pushback_controller`) reads the bytes in flight,
which the sender tells it (``Controller.on_outstanding_data``: bytes sent after the newest
packet a feedback report covered; the emulator from its send history, the live sender from
its own). A first version counted them from the rate the stage allowed instead; when the
encoder then sent nothing (every frame skipped, or a target below the encoder's floor) it
counted bytes that were never sent, the window never emptied and the stream stayed off while
the link was back (loki/LEARNING.md, session 13).

Two ways to act (``drop_frames``): lower the target the encoder and pacer follow (libwebrtc's
default pushback), or leave the target alone and skip captured frames before the encoder
(libwebrtc's ``DropFrame`` mode, ``VideoStreamEncoder::UpdateTargetBitrate``), so the encoder
keeps its quality and is never starved below its floor. libwebrtc skips at most one frame in
two; this stage skips the whole pushed-back share, up to every frame while the window stays
overfilled.
"""

from __future__ import annotations

from gcc.congestion_window_pushback_controller import (
    DEFAULT_MIN_PUSHBACK_TARGET_BPS,
    DEFAULT_QUEUE_SIZE_MS,
    CongestionWindow,
    CongestionWindowPushbackController,
)
from loki.api import Controller, ControllerConfig, TransportFeedback, WrappedController


class PushbackController(WrappedController):
    """``inner`` decides the estimate; the encoder gets it pushed back while data piles up."""

    name = "pushback"

    def __init__(
        self,
        inner: Controller,
        config: ControllerConfig | None = None,
        queue_size_ms: int = DEFAULT_QUEUE_SIZE_MS,
        min_bps: int = DEFAULT_MIN_PUSHBACK_TARGET_BPS,
        drop_frames: bool = False,
    ) -> None:
        super().__init__(inner)
        if config is not None:
            self.config = config
        self.window = CongestionWindow(queue_size_ms)
        self.pushback = CongestionWindowPushbackController(min_bps)
        self.drop_frames = drop_frames
        self._rate_bps = inner.target_bps
        self._skip_credit = 0.0

    @property
    def target_bps(self) -> int:
        return self.inner.target_bps if self.drop_frames else self._rate_bps

    @property
    def uses_outstanding_data(self) -> bool:
        return True

    def on_outstanding_data(self, outstanding_bytes: int, at_us: int) -> None:
        self.pushback.update_outstanding_data(outstanding_bytes)
        self.inner.on_outstanding_data(outstanding_bytes, at_us)

    @property
    def skips_frames(self) -> bool:
        return self.drop_frames or self.inner.skips_frames

    def skip_frame(self, at_us: int) -> bool:
        if self.inner.skip_frame(at_us):
            return True
        if not self.drop_frames:
            return False
        # Skip the pushed-back share of frames, spread evenly (a running credit).
        target = self.inner.target_bps
        self._skip_credit += 1.0 - self._rate_bps / target if target > 0 else 0.0
        if self._skip_credit >= 1.0:
            self._skip_credit -= 1.0
            return True
        if self._rate_bps >= target:
            self._skip_credit = 0.0
        return False

    def _update(self) -> int:
        self._rate_bps = self.pushback.update_target_bitrate(self.inner.target_bps)
        return self.target_bps

    def on_feedback(self, report: TransportFeedback) -> int:
        self.inner.on_feedback(report)
        received = report.received
        if received.any():
            oldest_send_us = int(report.send_time_us[received].min())
            self.window.on_feedback_rtt(report.feedback_time_us - oldest_send_us)
        window = self.window.update(self.inner.target_bps)
        if window is not None:
            self.pushback.set_data_window(window)
        return self._update()

    def on_process_interval(self, at_us: int) -> None:
        self.inner.on_process_interval(at_us)
        self._update()

    def on_loss_report(self, packets_lost: int, packets_expected: int, at_us: int) -> None:
        self.inner.on_loss_report(packets_lost, packets_expected, at_us)
        self._update()

    @property
    def fallbacks(self) -> int:
        """The inner controller's guard fallbacks (0 for one without a guard)."""
        return int(getattr(self.inner, "fallbacks", 0))
