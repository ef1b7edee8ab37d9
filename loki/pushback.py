"""Any controller behind libwebrtc's congestion-window pushback (``pushback:NAME``).

The pushback stage (:mod:`gcc.congestion_window_pushback_controller`) needs the bytes in
flight, which the controller interface does not carry (it sees feedback, not sent packets).
They are counted here from what the stage itself hands out: the rate it set, integrated over
time, is what the encoder produced, and the bytes produced after the newest packet a report
accounted for (received or lost) are the ones in flight. That is exact up to the encoder's
frame-size noise and the pacer's queue (which libwebrtc also leaves out by default).

Two ways to act (``drop_frames``): lower the target the encoder and pacer follow (libwebrtc's
default pushback), or leave the target alone and skip captured frames before the encoder
(libwebrtc's ``DropFrame`` mode, ``VideoStreamEncoder::UpdateTargetBitrate``), so the encoder
keeps its quality and is never starved below its floor. libwebrtc skips at most one frame in
two; this stage skips the whole pushed-back share, up to every frame while the window stays
overfilled (loki/LEARNING.md, session 13, says why and what it measured).
"""

from __future__ import annotations

from collections import deque

import numpy as np

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
        # (time, bytes produced up to then, rate from then on): the integral of our own output
        self._produced: deque[tuple[int, float, int]] = deque([(0, 0.0, self._rate_bps)])
        self._accounted_send_us = 0

    @property
    def target_bps(self) -> int:
        return self.inner.target_bps if self.drop_frames else self._rate_bps

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

    def _produced_at(self, at_us: int) -> float:
        t, produced, rate = self._produced[0]
        for entry in self._produced:
            if entry[0] > at_us:
                break
            t, produced, rate = entry
        return produced + rate * max(at_us - t, 0) / 8e6

    def _update(self, now_us: int) -> int:
        t, produced, rate = self._produced[-1]
        now_us = max(now_us, t)
        produced += rate * (now_us - t) / 8e6
        while len(self._produced) > 1 and self._produced[1][0] <= self._accounted_send_us:
            self._produced.popleft()
        in_flight = produced - self._produced_at(self._accounted_send_us)
        self.pushback.update_outstanding_data(in_flight)
        self._rate_bps = self.pushback.update_target_bitrate(self.inner.target_bps)
        self._produced.append((now_us, produced, self._rate_bps))
        return self._rate_bps

    def on_feedback(self, report: TransportFeedback) -> int:
        self.inner.on_feedback(report)
        if len(report):
            self._accounted_send_us = max(self._accounted_send_us, int(report.send_time_us.max()))
            received = report.received
            if received.any():
                sent = report.send_time_us[received]
                self.window.on_feedback_rtt(int(report.feedback_time_us - np.min(sent)))
        window = self.window.update(self.inner.target_bps)
        if window is not None:
            self.pushback.set_data_window(window)
        return self._update(report.feedback_time_us)

    def on_process_interval(self, at_us: int) -> None:
        self.inner.on_process_interval(at_us)
        self._update(at_us)

    def on_loss_report(self, packets_lost: int, packets_expected: int, at_us: int) -> None:
        self.inner.on_loss_report(packets_lost, packets_expected, at_us)
        self._update(at_us)

    @property
    def fallbacks(self) -> int:
        """The inner controller's guard fallbacks (0 for one without a guard)."""
        return int(getattr(self.inner, "fallbacks", 0))
