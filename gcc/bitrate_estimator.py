"""BitrateEstimator: the Bayesian throughput filter behind the pre-2023 acknowledged rate.

Adapted from ``modules/congestion_controller/goog_cc/bitrate_estimator.cc`` (upstream,
mid-2024). Bytes are summed over a fixed window (500 ms until the first sample, then 150 ms);
each full window gives a rate sample in kbps, which a scalar Bayesian filter folds into the
estimate. The sample's variance grows with its distance from the estimate (scale 10), so a
single outlying window moves the estimate little, while a sustained change gets through as the
estimate's own variance (+5 per sample) grows. ``expect_fast_rate_change`` (called on leaving
application-limited mode) adds 200 to the variance so the estimate can jump.

libwebrtc does this in ``float``; the arithmetic here rounds every operation to float32 as it
does, so estimates match bit for bit. Only the per-window sample path uses float32; the
per-packet path is integer work.
"""

from __future__ import annotations

from dataclasses import dataclass

from gcc.units import BIT_US_PER_BYTE_S, US_PER_MS, f32

INITIAL_RATE_WINDOW_MS = 500
RATE_WINDOW_MS = 150
MIN_RATE_WINDOW_MS = 150
MAX_RATE_WINDOW_MS = 1000
INITIAL_ESTIMATE_VARIANCE = 50.0
#: Added to the estimate's variance per sample: models the rate drifting between samples.
PREDICTION_VARIANCE = 5.0
#: Added to the variance by ``expect_fast_rate_change``.
FAST_RATE_CHANGE_VARIANCE = 200.0


@dataclass(frozen=True, slots=True)
class BitrateEstimatorConfig:
    """``WebRTC-BweThroughputWindowConfig`` parameters, with libwebrtc's defaults.

    ``uncertainty_symmetry_cap_bps`` 0 makes the sample uncertainty
    ``scale * |estimate - sample| / estimate``.
    """

    initial_window_ms: int = INITIAL_RATE_WINDOW_MS
    window_ms: int = RATE_WINDOW_MS
    uncertainty_scale: float = 10.0
    uncertainty_scale_in_alr: float = 10.0
    small_sample_uncertainty_scale: float = 10.0
    small_sample_threshold_bytes: int = 0
    uncertainty_symmetry_cap_bps: int = 0
    estimate_floor_bps: int = 0

    def __post_init__(self) -> None:
        for name in ("initial_window_ms", "window_ms"):
            value = getattr(self, name)
            if not MIN_RATE_WINDOW_MS <= value <= MAX_RATE_WINDOW_MS:
                raise ValueError(
                    f"{name} must be in [{MIN_RATE_WINDOW_MS}, {MAX_RATE_WINDOW_MS}], got {value}"
                )


class BitrateEstimator:
    """Windowed byte counter plus scalar Bayesian filter, in libwebrtc's float32 arithmetic."""

    __slots__ = (
        "_current_window_ms",
        "_estimate_kbps",
        "_estimate_var",
        "_floor_kbps",
        "_initial_window_ms",
        "_prev_time_ms",
        "_scale",
        "_scale_alr",
        "_scale_small",
        "_small_threshold_bytes",
        "_sum_bytes",
        "_symmetry_cap_kbps",
        "_window_ms",
    )

    def __init__(self, config: BitrateEstimatorConfig | None = None) -> None:
        c = config or BitrateEstimatorConfig()
        self._initial_window_ms = c.initial_window_ms
        self._window_ms = c.window_ms
        self._scale = f32(c.uncertainty_scale)
        self._scale_alr = f32(c.uncertainty_scale_in_alr)
        self._scale_small = f32(c.small_sample_uncertainty_scale)
        self._small_threshold_bytes = c.small_sample_threshold_bytes
        # DataRate::kbps<float>(): the bps value narrowed to float, then divided in float.
        self._symmetry_cap_kbps = f32(f32(c.uncertainty_symmetry_cap_bps) / 1000)
        self._floor_kbps = f32(f32(c.estimate_floor_bps) / 1000)
        self._sum_bytes = 0
        self._current_window_ms = 0
        self._prev_time_ms = -1
        self._estimate_kbps = -1.0
        self._estimate_var = INITIAL_ESTIMATE_VARIANCE

    def update(self, at_us: int, amount_bytes: int, in_alr: bool) -> None:
        """Count one acknowledged packet of ``amount_bytes`` received at ``at_us``."""
        # libwebrtc works on Timestamp::ms(): the nearest millisecond, halves rounded up.
        at_ms = (at_us + US_PER_MS // 2) // US_PER_MS
        # Inlined UpdateWindow: this runs once per packet.
        rate_window_ms = self._window_ms if self._estimate_kbps >= 0.0 else self._initial_window_ms
        prev_ms = self._prev_time_ms
        if at_ms < prev_ms:  # Time went backwards: reset.
            prev_ms = -1
            self._sum_bytes = 0
            self._current_window_ms = 0
        if prev_ms >= 0:
            self._current_window_ms += at_ms - prev_ms
            if at_ms - prev_ms > rate_window_ms:  # Nothing received for a full window.
                self._sum_bytes = 0
                self._current_window_ms %= rate_window_ms
        self._prev_time_ms = at_ms
        if self._current_window_ms < rate_window_ms:
            self._sum_bytes += amount_bytes
            return
        sum_bytes = self._sum_bytes
        is_small_sample = sum_bytes < self._small_threshold_bytes
        sample_kbps = f32(f32(8.0 * f32(sum_bytes)) / rate_window_ms)
        self._current_window_ms -= rate_window_ms
        self._sum_bytes = amount_bytes  # This packet's bytes start the next window.
        self._update_estimate(sample_kbps, is_small_sample, in_alr)

    def _update_estimate(self, sample_kbps: float, is_small_sample: bool, in_alr: bool) -> None:
        estimate = self._estimate_kbps
        if estimate < 0.0:
            self._estimate_kbps = sample_kbps  # First sample initialises the estimate.
            return
        scale = self._scale
        if is_small_sample and sample_kbps < estimate:
            scale = self._scale_small
        elif in_alr and sample_kbps < estimate:
            scale = self._scale_alr
        uncertainty = f32(
            f32(scale * abs(f32(estimate - sample_kbps)))
            / f32(estimate + min(sample_kbps, self._symmetry_cap_kbps))
        )
        sample_var = f32(uncertainty * uncertainty)
        pred_var = f32(self._estimate_var + PREDICTION_VARIANCE)
        total_var = f32(sample_var + pred_var)
        new_estimate = f32(
            f32(f32(sample_var * estimate) + f32(pred_var * sample_kbps)) / total_var
        )
        self._estimate_kbps = max(new_estimate, self._floor_kbps)
        self._estimate_var = f32(f32(sample_var * pred_var) / total_var)

    def bitrate(self) -> int | None:
        """The estimate in bps (``DataRate::KilobitsPerSec(float)``: float product, truncated)."""
        if self._estimate_kbps < 0.0:
            return None
        return int(f32(self._estimate_kbps * 1000.0))

    def peek_rate(self) -> int | None:
        """Rate of the window being filled, for use before the first estimate."""
        if self._current_window_ms > 0:
            return self._sum_bytes * BIT_US_PER_BYTE_S // (self._current_window_ms * US_PER_MS)
        return None

    def expect_fast_rate_change(self) -> None:
        """Let the next samples move the estimate fast (raise its variance by 200)."""
        self._estimate_var = f32(self._estimate_var + FAST_RATE_CHANGE_VARIANCE)
