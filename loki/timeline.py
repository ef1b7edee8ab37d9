"""A session's per-second time line, binned the same way for emulated and live sessions.

One function so that ``loki emulate --timeline`` and ``loki live --timeline`` write the same
columns with the same meaning, and their plots can be laid over each other: a live session
is judged against its emulated twin (``bench/rtc_sim_vs_live.py``), and a column binned
differently on one side would show a difference that is not there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The columns, in order (rates kbps, delays ms; a bin with nothing to average is NaN).
COLUMNS = (
    "time_s",
    "capacity_kbps",
    "target_kbps",
    "sent_kbps",
    "delivered_kbps",
    "packet_delay_ms",
    "frame_delay_ms",
    "fps",
)


def bin_timeline(
    *,
    end_ms: int,
    send_ms: np.ndarray,
    arrival_ms: np.ndarray,
    size_bytes: np.ndarray,
    capacity_kbps: np.ndarray,
    decisions: Sequence[tuple[float, float]],
    render_ms: Sequence[float],
    frame_delay_ms: Sequence[float],
    bin_ms: int = 1000,
) -> dict[str, np.ndarray]:
    """Per-bin series of one session (times from the session's start, ms).

    ``arrival_ms`` is negative for a lost packet; ``capacity_kbps`` has one value per bin
    (:func:`bins`); ``decisions`` are ``(time_s, target_bps)`` in time order, each target held
    until the next; a frame counts in the bin it was rendered in."""
    nb = bins(end_ms, bin_ms)
    t = np.arange(nb) * bin_ms / 1000.0
    send = np.asarray(send_ms, dtype=np.int64)
    arr = np.asarray(arrival_ms, dtype=np.int64)
    size = np.asarray(size_bytes, dtype=np.float64)
    scale = 8.0 / bin_ms  # bytes per bin -> kbps
    sb = np.clip(send // bin_ms, 0, nb - 1)
    sent = np.bincount(sb, weights=size, minlength=nb)[:nb] * scale
    ok = (arr >= 0) & (arr < end_ms)
    ab = np.clip(arr[ok] // bin_ms, 0, nb - 1)
    delivered = np.bincount(ab, weights=size[ok], minlength=nb)[:nb] * scale
    dsum = np.bincount(ab, weights=(arr[ok] - send[ok]).astype(np.float64), minlength=nb)
    dcnt = np.bincount(ab, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        pdelay = np.where(dcnt[:nb] > 0, dsum[:nb] / dcnt[:nb], np.nan)
    # The last decision in each bin, held through bins without one.
    target = np.full(nb, np.nan)
    if decisions:
        ts, tb = (np.asarray(c) for c in zip(*decisions, strict=True))
        # A decision made before the start (a live sender's, before its first frame) is the
        # one in force at it.
        b = (np.maximum(ts, 0.0) * 1000 // bin_ms).astype(np.int64)
        last_in_bin = np.append(b[1:] != b[:-1], True) & (b < nb)
        target[b[last_in_bin]] = tb[last_in_bin] / 1000.0
        held = np.where(np.isnan(target), -1, np.arange(nb))
        np.maximum.accumulate(held, out=held)
        target = np.where(held >= 0, target[np.maximum(held, 0)], np.nan)
    r = np.asarray(render_ms, dtype=np.float64)
    fd = np.asarray(frame_delay_ms, dtype=np.float64)
    rb = np.clip((r // bin_ms).astype(np.int64), 0, nb - 1) if r.size else r.astype(np.int64)
    fsum = np.bincount(rb, weights=fd, minlength=nb)[:nb]
    fcnt = np.bincount(rb, minlength=nb)[:nb]
    with np.errstate(invalid="ignore", divide="ignore"):
        fdelay = np.where(fcnt > 0, fsum / fcnt, np.nan)
    return dict(
        zip(
            COLUMNS,
            (
                t,
                np.asarray(capacity_kbps, dtype=np.float64)[:nb],
                target,
                sent,
                delivered,
                pdelay,
                fdelay,
                fcnt * (1000.0 / bin_ms),
            ),
            strict=True,
        )
    )


def bins(end_ms: int, bin_ms: int = 1000) -> int:
    """How many bins a session of ``end_ms`` has (the last one may be partial)."""
    return max(1, -(-int(end_ms) // bin_ms))
