"""Per-session quality of experience, computed the same way for emulated and live sessions.

Definitions are the project's judging rules (``shared/docs/loki-design.md``):

* A freeze follows the W3C webrtc-stats rule Chromium implements: an inter-frame render gap
  longer than ``max(3 x mean frame duration, mean frame duration + 150 ms)``; the mean frame
  duration is taken over the preceding render intervals (Chromium's VideoQualityObserver keeps
  a sliding window; we use the last :data:`FREEZE_WINDOW_FRAMES` intervals). Stall rate is total
  freeze duration over session duration.
* Frame delay is capture-to-render time of every rendered frame.
* The MMSys'21 challenge network score: ``100 x (0.2 x delay score + 0.2 x receive-rate score +
  0.3 x (1 - loss))`` with delay score ``(400 - p95 delay) / (400 - min delay)`` on one-way packet
  delays capped at 400 ms, and receive-rate score ``min(1, delivered / capacity)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numba import njit

#: Render intervals averaged to get the "mean frame duration" of the freeze rule.
FREEZE_WINDOW_FRAMES = 30
FREEZE_MIN_EXTRA_MS = 150.0
MMSYS21_DELAY_CAP_MS = 400.0
#: Start-up time before the first rendered frame that is not counted as stalled.
STARTUP_GRACE_MS = 1000.0


@dataclass(frozen=True)
class QoeReport:
    """The per-session figures every command prints and every benchmark aggregates."""

    duration_s: float
    bitrate_kbps: float
    capacity_kbps: float
    utilization: float
    stall_rate: float
    freezes: int
    freezes_per_min: float
    frame_delay_p50_ms: float
    frame_delay_p95_ms: float
    frames_rendered: int
    frames_sent: int
    loss_rate: float
    packet_delay_p95_ms: float
    score_mmsys21: float

    def to_dict(self) -> dict:
        return asdict(self)


def find_freezes(render_ms: Sequence[float]) -> list[tuple[float, float]]:
    """Return (start_ms, duration_ms) of each freeze in a series of render times.

    The first interval has no history to judge by, so a freeze needs at least one earlier
    interval; this matches Chromium, which starts counting after the first frames.
    """
    if len(render_ms) < 3:
        return []  # no interval with history
    ends = _freeze_ends(np.asarray(render_ms, dtype=np.float64))
    return [(render_ms[i - 1], render_ms[i] - render_ms[i - 1]) for i in ends.tolist()]


@njit(cache=True)
def _freeze_ends(render_ms: np.ndarray) -> np.ndarray:
    """The frames ``i`` that end a freeze (their gap from frame ``i - 1``), compiled: a session
    renders tens of thousands of frames. The mean is a running sum over a ring of the last
    :data:`FREEZE_WINDOW_FRAMES` gaps."""
    n = render_ms.shape[0]
    ends = np.empty(max(n - 1, 0), dtype=np.int64)
    n_ends = 0
    window = np.empty(FREEZE_WINDOW_FRAMES)
    count = 0
    oldest = 0
    window_sum = 0.0
    for i in range(1, n):
        gap = render_ms[i] - render_ms[i - 1]
        if count:
            mean = window_sum / count
            limit = 3.0 * mean
            if mean + FREEZE_MIN_EXTRA_MS > limit:
                limit = mean + FREEZE_MIN_EXTRA_MS
            if gap > limit:
                ends[n_ends] = i
                n_ends += 1
        if count == FREEZE_WINDOW_FRAMES:
            window_sum -= window[oldest]
            window[oldest] = gap
            oldest = oldest + 1 if oldest + 1 < FREEZE_WINDOW_FRAMES else 0
        else:
            window[count] = gap
            count += 1
        window_sum += gap
    return ends[:n_ends]


def session_freezes(
    render_ms: Sequence[float], start_ms: float, end_ms: float
) -> list[tuple[float, float]]:
    """Freezes of a whole session, including a start-up stall and an open trailing gap.

    A receiver that renders nothing for the last seconds of a session is stalled even though no
    later frame closes the gap, so the trailing gap up to ``end_ms`` is judged by the same rule.
    Chromium counts nothing before the first frame; a first keyframe legitimately takes a few
    hundred ms, but a stream that shows nothing for seconds is stalled, so start-up time beyond
    :data:`STARTUP_GRACE_MS` counts as one freeze. A session that renders nothing is one freeze.
    """
    if len(render_ms) == 0:
        return [(start_ms, end_ms - start_ms)]
    out: list[tuple[float, float]] = []
    lead = render_ms[0] - start_ms
    if lead > STARTUP_GRACE_MS:
        out.append((start_ms + STARTUP_GRACE_MS, lead - STARTUP_GRACE_MS))
    out.extend(find_freezes([*render_ms, end_ms]))
    return out


def compute_qoe(
    *,
    duration_ms: float,
    capacity_bytes: float,
    link_bytes: float,
    frames_sent: int,
    render_ms: Sequence[float],
    frame_delay_ms: Sequence[float],
    frame_bytes_rendered: float,
    packets_sent: int,
    packets_lost: int,
    packet_delay_ms: Sequence[float],
) -> QoeReport:
    """Fold one session's raw records into a :class:`QoeReport`.

    ``capacity_bytes`` is what the link could have carried during the session and
    ``link_bytes`` what it delivered (both counted as the link charges them); their ratio is
    the utilisation and the MMSys'21 receive-rate score. ``bitrate_kbps`` counts only video
    frames that were rendered.
    """
    if duration_ms <= 0:
        raise ValueError("compute_qoe: duration_ms must be > 0")
    duration_s = duration_ms / 1000.0
    render = np.asarray(render_ms, dtype=np.float64)
    freezes = session_freezes(render.tolist(), 0.0, duration_ms)
    stall_ms = sum(d for _, d in freezes)
    n_freezes = len(freezes)
    bitrate_bps = frame_bytes_rendered * 8.0 / duration_s
    capacity_bps = capacity_bytes * 8.0 / duration_s
    utilization = link_bytes / capacity_bytes if capacity_bytes > 0 else 0.0
    fd = np.asarray(frame_delay_ms, dtype=np.float64)
    fd_p50 = float(np.percentile(fd, 50)) if fd.size else float("nan")
    fd_p95 = float(np.percentile(fd, 95)) if fd.size else float("nan")
    loss = packets_lost / packets_sent if packets_sent else 0.0
    pd = np.minimum(np.asarray(packet_delay_ms, dtype=np.float64), MMSYS21_DELAY_CAP_MS)
    if pd.size:
        p95 = float(np.percentile(pd, 95))
        lo = float(pd.min())
        delay_score = (MMSYS21_DELAY_CAP_MS - p95) / max(MMSYS21_DELAY_CAP_MS - lo, 1e-9)
    else:
        p95, delay_score = float("nan"), 0.0
    rate_score = min(1.0, utilization)
    score = 100.0 * (0.2 * delay_score + 0.2 * rate_score + 0.3 * (1.0 - loss))
    return QoeReport(
        duration_s=duration_s,
        bitrate_kbps=bitrate_bps / 1000.0,
        capacity_kbps=capacity_bps / 1000.0,
        utilization=utilization,
        stall_rate=min(1.0, stall_ms / duration_ms),
        freezes=n_freezes,
        freezes_per_min=n_freezes / (duration_s / 60.0),
        frame_delay_p50_ms=fd_p50,
        frame_delay_p95_ms=fd_p95,
        frames_rendered=int(render.size),
        frames_sent=int(frames_sent),
        loss_rate=loss,
        packet_delay_p95_ms=p95,
        score_mmsys21=score,
    )
