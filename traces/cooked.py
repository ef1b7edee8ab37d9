"""Read Pensieve-style "cooked" throughput series and convert them to delivery opportunities.

A cooked file has one sample per line, ``time_s mbps``: whitespace-separated (Pensieve's
``cooked_traces``) or CSV ``time_s,mbps`` with or without a header line. Sample ``i`` holds from
``time_s[i]`` until the next sample. The shared sets (``../shared/traces/*/cooked/*.csv``) end
with a sentinel line ``T,end`` that gives the duration; without one, the last sample is held for
the median interval between samples, which is the rule the shared sets' ``end`` lines follow
(checked on all 280 files). A series that starts after 0 is shifted to start at 0. Sample times
are rounded to whole milliseconds, as mahimahi has no finer time.

The conversion itself lives in :mod:`traces.rate_steps`; converting a shared set's cooked file
reproduces its ``.mahi`` (the cut of a ``_partK`` or truncated file included, via ``start_ms``
and ``duration_ms``) except where the CSV's 6 significant digits lost precision the original
conversion still had.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from traces.rate_steps import trace_from_rate_steps
from traces.trace import Trace, TraceError

MS_PER_S = 1000
BPS_PER_MBPS = 1e6
#: Second field of the sentinel line that marks the series' end time.
END_MARKER = "end"


@dataclass(frozen=True)
class ThroughputSeries:
    """Samples of a piecewise-constant throughput: ``rates_mbps[i]`` from ``times_ms[i]`` on.

    ``end_ms`` is where the last sample stops holding (the trace duration).
    """

    times_ms: np.ndarray
    rates_mbps: np.ndarray
    end_ms: int

    def step_lengths_ms(self) -> np.ndarray:
        return np.diff(np.append(self.times_ms, self.end_ms))

    def mean_mbps(self) -> float:
        lengths = self.step_lengths_ms()
        return float(np.dot(lengths, self.rates_mbps) / lengths.sum())


def read_cooked(path: str | os.PathLike[str]) -> ThroughputSeries:
    """Parse a cooked file; errors name the file and line."""
    p = Path(path)
    return parse_cooked(p.read_text(encoding="utf-8", errors="replace"), str(p))


def parse_cooked(text: str, source: str = "<string>") -> ThroughputSeries:
    """Parse cooked text (see the module docstring for the accepted shapes)."""
    times_s: list[float] = []
    rates: list[float] = []
    end_s: float | None = None
    first_data_line = True
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.replace(",", " ").split()
        where = f"{source}: line {line_no}"
        if end_s is not None:
            raise TraceError(f"{where}: data after the '{END_MARKER}' line")
        if len(fields) != 2:
            raise TraceError(f"{where}: expected 'time_s mbps', got {line!r}")
        try:
            t_s = float(fields[0])
        except ValueError:
            if first_data_line:  # a header such as "time_s,mbps"
                first_data_line = False
                continue
            raise TraceError(f"{where}: time is not a number ({fields[0]!r})") from None
        first_data_line = False
        if not math.isfinite(t_s):
            raise TraceError(f"{where}: time is not finite ({fields[0]!r})")
        if times_s and t_s < times_s[-1]:
            raise TraceError(f"{where}: time {t_s} s is before the previous sample")
        if fields[1].lower() == END_MARKER:
            end_s = t_s
            continue
        try:
            rate = float(fields[1])
        except ValueError:
            raise TraceError(f"{where}: throughput is not a number ({fields[1]!r})") from None
        if not math.isfinite(rate) or rate < 0:
            raise TraceError(f"{where}: throughput must be finite and >= 0 (got {fields[1]!r})")
        times_s.append(t_s)
        rates.append(rate)
    if not times_s:
        raise TraceError(f"{source}: no throughput samples")
    return _series(source, np.array(times_s), np.array(rates), end_s)


def _series(
    source: str, times_s: np.ndarray, rates_mbps: np.ndarray, end_s: float | None
) -> ThroughputSeries:
    origin_s = times_s[0]
    times_ms = np.rint((times_s - origin_s) * MS_PER_S).astype(np.int64)
    if end_s is not None:
        end_ms = round((end_s - origin_s) * MS_PER_S)
    elif times_ms.size > 1:
        end_ms = int(times_ms[-1] + np.median(np.diff(times_ms)))
    else:
        raise TraceError(f"{source}: one sample and no end time: the duration is unknown")
    if end_ms <= times_ms[-1]:
        raise TraceError(f"{source}: the series ends at {end_ms} ms, not after its last sample")
    return ThroughputSeries(times_ms, rates_mbps, end_ms)


def series_from_arrays(
    times_s: np.ndarray | list[float],
    rates_mbps: np.ndarray | list[float],
    end_s: float | None = None,
) -> ThroughputSeries:
    """A series from in-memory samples, with the same end and origin rules as a file."""
    times = np.asarray(times_s, dtype=np.float64)
    rates = np.asarray(rates_mbps, dtype=np.float64)
    if times.ndim != 1 or times.shape != rates.shape or times.size == 0:
        raise TraceError("need as many times as rates, at least one")
    if np.any(np.diff(times) < 0):
        raise TraceError("sample times must be non-decreasing")
    if not np.all(np.isfinite(rates)) or rates.min() < 0:
        raise TraceError("throughputs must be finite and >= 0")
    return _series("<arrays>", times, rates, end_s)


def series_to_trace(
    series: ThroughputSeries,
    name: str,
    *,
    start_ms: int = 0,
    duration_ms: int | None = None,
    meta: dict | None = None,
) -> Trace:
    """Delivery opportunities for ``series``: the whole of it, or the cut from ``start_ms``.

    ``duration_ms`` defaults to the rest of the series.
    """
    return trace_from_rate_steps(
        name,
        series.step_lengths_ms(),
        series.rates_mbps * BPS_PER_MBPS,
        start_ms=start_ms,
        duration_ms=duration_ms,
        meta=meta,
    )


def read_cooked_trace(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    start_ms: int = 0,
    duration_ms: int | None = None,
) -> Trace:
    """Load a cooked file straight into a :class:`Trace` named after the file's stem.

    ``meta``: ``source``, ``format`` (``"cooked"``), ``mean_mbps`` (of the series) and
    ``appended_final_opportunity``.
    """
    p = Path(path)
    series = read_cooked(p)
    meta = {"source": str(p), "format": "cooked", "mean_mbps": series.mean_mbps()}
    return series_to_trace(
        series, name or p.stem, start_ms=start_ms, duration_ms=duration_ms, meta=meta
    )
