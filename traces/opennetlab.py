"""Read OpenNetLab / AlphaRTC JSON link traces (MMSys'21 bandwidth-estimation challenge).

Shape: ``{"uplink": {"trace_pattern": [{"duration": ms, "capacity": kbit/s, "loss": fraction,
"rtt": ms, "jitter": ms}, ...]}}``; only ``duration`` and ``capacity`` are required. ``loss`` is
a fraction in [0, 1] (OpenNetLab/gym's loss tests compare it with the measured loss ratio).
Capacity becomes delivery opportunities through :mod:`traces.rate_steps`; the rest rides along
in ``Trace.meta`` per segment, for stages that can apply it (mahimahi cannot).

``Trace.meta`` keys:

- ``source``, ``format`` (``"opennetlab"``), ``type`` (the JSON's ``type``, or None)
- ``segment_start_ms``: int64 array, where each pattern segment starts on the trace's time line
- ``segment_duration_ms``: int64 array, each segment's length (whole ms)
- ``capacity_kbps``: float array, capacity per segment as converted (glitches replaced)
- ``loss_rate``: float array, per-segment random loss fraction (0.0 where absent)
- ``rtt_ms``: float array, per-segment extra round-trip time (0.0 where absent)
- ``jitter_ms``: float array, per-segment jitter (0.0 where absent)
- ``fields_present``: tuple of the optional fields ("loss", "rtt", "jitter") the file had
- ``glitch_steps_replaced``: how many capacity glitches were replaced (see below)
- ``appended_final_opportunity``: see :func:`traces.rate_steps.close_period`

Some challenge traces carry single-step recording glitches (up to 3.3e7 kbit/s in one 200 ms
step). As the shared set did for its ``.mahi`` files, a step above ``glitch_factor`` times the
trace's median non-zero capacity takes the previous step's (already cleaned) capacity, so that
the JSON and the shared ``.mahi`` give the same trace. Pass ``glitch_factor=None`` to keep them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from traces.rate_steps import trace_from_rate_steps
from traces.trace import Trace, TraceError

BPS_PER_KBPS = 1000.0
#: Same threshold as the shared ``opennetlab_gym`` conversion (SOURCE.json notes).
DEFAULT_GLITCH_FACTOR = 20.0
OPTIONAL_FIELDS = ("loss", "rtt", "jitter")
_META_KEY = {"loss": "loss_rate", "rtt": "rtt_ms", "jitter": "jitter_ms"}


def read_opennetlab(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    glitch_factor: float | None = DEFAULT_GLITCH_FACTOR,
) -> Trace:
    """Load an OpenNetLab JSON trace file as a :class:`Trace` named after the file's stem."""
    p = Path(path)
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise TraceError(f"{p}: line {e.lineno}: not valid JSON ({e.msg})") from None
    return opennetlab_to_trace(doc, name or p.stem, source=str(p), glitch_factor=glitch_factor)


def _number(segment: dict, key: str, where: str) -> float:
    value = segment[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TraceError(f"{where}: '{key}' must be a finite number (got {value!r})")
    return float(value)


def _pattern(doc: object, source: str) -> list:
    if not isinstance(doc, dict) or not isinstance(doc.get("uplink"), dict):
        raise TraceError(f"{source}: no 'uplink' object (not an OpenNetLab trace?)")
    pattern = doc["uplink"].get("trace_pattern")
    if not isinstance(pattern, list) or not pattern:
        raise TraceError(f"{source}: 'uplink.trace_pattern' must be a non-empty list")
    return pattern


def replace_glitches(capacity_kbps: np.ndarray, factor: float) -> tuple[np.ndarray, int]:
    """Replace steps above ``factor`` x median non-zero capacity by the previous clean step.

    A glitch in the first step takes the median itself. Returns the cleaned copy and the count.
    """
    nonzero = capacity_kbps[capacity_kbps > 0]
    if nonzero.size == 0:
        return capacity_kbps.copy(), 0
    median_kbps = float(np.median(nonzero))
    threshold_kbps = factor * median_kbps
    cleaned = capacity_kbps.copy()
    glitches = np.flatnonzero(cleaned > threshold_kbps)
    for i in glitches.tolist():
        cleaned[i] = cleaned[i - 1] if i > 0 else median_kbps
    return cleaned, int(glitches.size)


def opennetlab_to_trace(
    doc: object,
    name: str,
    *,
    source: str = "<json>",
    glitch_factor: float | None = DEFAULT_GLITCH_FACTOR,
) -> Trace:
    """Convert a parsed OpenNetLab document; errors name the source and the segment."""
    pattern = _pattern(doc, source)
    durations = np.empty(len(pattern))
    capacity = np.empty(len(pattern))
    extras = {field: np.zeros(len(pattern)) for field in OPTIONAL_FIELDS}
    present: set[str] = set()
    for i, seg in enumerate(pattern):
        where = f"{source}: trace_pattern[{i}]"
        if not isinstance(seg, dict) or "duration" not in seg or "capacity" not in seg:
            raise TraceError(f"{where}: needs 'duration' (ms) and 'capacity' (kbit/s)")
        durations[i] = _number(seg, "duration", where)
        capacity[i] = _number(seg, "capacity", where)
        if durations[i] < 0 or capacity[i] < 0:
            raise TraceError(f"{where}: duration and capacity must be >= 0")
        for field in OPTIONAL_FIELDS:
            if field in seg:
                extras[field][i] = _number(seg, field, where)
                present.add(field)
        if not 0.0 <= extras["loss"][i] <= 1.0:
            raise TraceError(f"{where}: loss {extras['loss'][i]} is not a fraction in [0, 1]")
    # Segment boundaries are rounded on the cumulative time line, so fractional durations
    # do not drift.
    bounds_ms = np.rint(np.concatenate(([0.0], np.cumsum(durations)))).astype(np.int64)
    lengths_ms = np.diff(bounds_ms)
    if bounds_ms[-1] <= 0:
        raise TraceError(f"{source}: the trace pattern lasts 0 ms")
    replaced = 0
    if glitch_factor is not None:
        capacity, replaced = replace_glitches(capacity, glitch_factor)
    meta = {
        "source": source,
        "format": "opennetlab",
        "type": doc.get("type") if isinstance(doc, dict) else None,
        "segment_start_ms": bounds_ms[:-1],
        "segment_duration_ms": lengths_ms,
        "capacity_kbps": capacity,
        **{_META_KEY[field]: extras[field] for field in OPTIONAL_FIELDS},
        "fields_present": tuple(f for f in OPTIONAL_FIELDS if f in present),
        "glitch_steps_replaced": replaced,
    }
    return trace_from_rate_steps(name, lengths_ms, capacity * BPS_PER_KBPS, meta=meta)


def segment_value_at(trace: Trace, key: str, t_ms: int) -> float:
    """A per-segment meta value (e.g. ``"loss_rate"``) at ``t_ms``, following the trace's loop."""
    if key not in trace.meta or "segment_start_ms" not in trace.meta:
        raise KeyError(f"{trace.name} has no per-segment '{key}' (not an OpenNetLab trace?)")
    rem_ms = int(t_ms) % trace.period_ms
    i = int(np.searchsorted(trace.meta["segment_start_ms"], rem_ms, side="right")) - 1
    return float(trace.meta[key][max(i, 0)])
