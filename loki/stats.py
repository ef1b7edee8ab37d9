"""Paired statistics for "controller X against GCC on the same sessions".

Every controller runs on the same traces with the same link and seed, so per-session figures
come in pairs. A paired bootstrap resamples *pairs* (the same session indices for both
controllers), which keeps the trace-to-trace variation out of the comparison: a hard trace is
hard for both, and only the difference the controller makes is left in the interval.

The compared figures are ratios of aggregate statistics (mean stall rate of X over mean stall
rate of GCC, less one), as the Loki paper reports them ("-13.98 % mean stall rate"), not means
of per-session ratios, which blow up on sessions where GCC did not stall at all. Intervals are
percentile bootstrap intervals (Efron & Tibshirani, An Introduction to the Bootstrap, ch. 13).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
#: Bootstrap resamples processed at once, to bound memory on large session sets.
RESAMPLE_CHUNK = 256

#: A statistic reduces the last axis of an array of per-session figures.
Statistic = Callable[[np.ndarray], np.ndarray]


def mean(x: np.ndarray) -> np.ndarray:
    return np.mean(x, axis=-1)


def p95(x: np.ndarray) -> np.ndarray:
    return np.percentile(x, 95, axis=-1)


STATISTICS: dict[str, Statistic] = {"mean": mean, "p95": p95}


def relative_change(candidate: np.ndarray | float, baseline: np.ndarray | float) -> np.ndarray:
    """``candidate / baseline - 1``, elementwise.

    0 where both are 0 (no stalls either way is no change); +inf where only the baseline is 0
    (any stall where GCC had none is an unbounded relative increase).
    """
    c = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = c / b - 1.0
    out = np.where((b == 0) & (c == 0), 0.0, out)
    return np.where((b == 0) & (c > 0), np.inf, out)


@dataclass(frozen=True)
class PairedChange:
    """Relative change of a statistic, candidate against baseline, with its bootstrap interval.

    A baseline statistic of 0 gives ``inf`` (or ``nan`` with no pairs at all); results.json
    writes those as ``null``, since JSON has no infinity.
    """

    estimate: float
    ci_low: float
    ci_high: float
    candidate: float
    baseline: float
    pairs: int
    resamples: int
    confidence: float

    @property
    def significant(self) -> bool:
        """True when the interval excludes 0 (no change)."""
        return bool(self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["significant"] = self.significant
        return d


def derive_seed(seed: int, *labels: str) -> list[int]:
    """A seed for one comparison that does not depend on the order comparisons are made in."""
    return [int(seed), *(zlib.crc32(label.encode()) for label in labels)]


def paired_relative_change(
    candidate: np.ndarray,
    baseline: np.ndarray,
    statistic: Statistic | str,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int | list[int] = 0,
) -> PairedChange:
    """Relative change of ``statistic`` from ``baseline`` to ``candidate``, paired by index.

    ``candidate[i]`` and ``baseline[i]`` must come from the same session conditions. Pairs
    where either value is NaN (a session that rendered no frame has no frame delay) are
    dropped from both sides together.
    """
    stat = STATISTICS[statistic] if isinstance(statistic, str) else statistic
    c = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if c.shape != b.shape or c.ndim != 1:
        raise ValueError(f"paired samples need equal 1-D shapes, got {c.shape} and {b.shape}")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError("need resamples >= 1 and 0 < confidence < 1")
    keep = ~(np.isnan(c) | np.isnan(b))
    c, b = c[keep], b[keep]
    n = c.size
    if n == 0:
        nan = float("nan")
        return PairedChange(nan, nan, nan, nan, nan, 0, resamples, confidence)
    stat_c, stat_b = float(stat(c)), float(stat(b))
    estimate = float(relative_change(stat_c, stat_b))
    rng = np.random.default_rng(seed)
    replicates = np.empty(resamples)
    for start in range(0, resamples, RESAMPLE_CHUNK):
        m = min(RESAMPLE_CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(m, n))  # one draw of session indices, used for both
        replicates[start : start + m] = relative_change(stat(c[idx]), stat(b[idx]))
    alpha = (1.0 - confidence) / 2.0
    # No interpolation between order statistics: an infinite replicate must not turn into NaN.
    lo = float(np.quantile(replicates, alpha, method="lower"))
    hi = float(np.quantile(replicates, 1.0 - alpha, method="higher"))
    return PairedChange(estimate, lo, hi, stat_c, stat_b, n, resamples, confidence)
