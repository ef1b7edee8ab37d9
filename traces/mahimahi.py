"""Read and write mahimahi trace files (one delivery-opportunity millisecond per line).

Format (``../shared/docs/mahimahi-link.md``, mahimahi's ``link_queue.cc``): one non-negative
integer per line, non-decreasing, looping with period = the last timestamp, which must be > 0.
Whitespace around a number and blank lines at the end are accepted; anything else (a blank line
inside the file, two numbers on a line, a sign, a decimal point) is refused with a
:class:`TraceError` naming the file and the line, and nothing half-loaded is returned.

Reading is vectorised: the byte buffer is checked for the one-number-per-line shape with numpy,
parsed in one call, and only a malformed file falls back to a line-by-line scan whose sole job
is to name the offending line. Half a million lines read in a few tens of milliseconds.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from traces.trace import Trace, TraceError

#: Longest accepted number: 18 digits always fits in int64 (a trace would be 30 million years).
MAX_DIGITS = 18

_WHITESPACE = b" \t\r\n"
_ORD_SPACE, _ORD_TAB, _ORD_CR, _ORD_LF = 32, 9, 13, 10
_ORD_0, _ORD_9 = 48, 57


def read_mahimahi(path: str | os.PathLike[str], name: str | None = None) -> Trace:
    """Load a mahimahi file as a :class:`Trace` named after the file's stem.

    ``meta`` holds ``source`` (the path as given) and ``format`` (``"mahimahi"``).
    """
    p = Path(path)
    data = p.read_bytes()
    ops = parse_mahimahi(data, str(p))
    return Trace(name or p.stem, ops, {"source": str(p), "format": "mahimahi"})


def parse_mahimahi(data: bytes | str, source: str = "<string>") -> np.ndarray:
    """Opportunity times from mahimahi text; ``source`` names the file in error messages."""
    if isinstance(data, str):
        data = data.encode()
    body = data.rstrip(_WHITESPACE)
    if not body:
        raise TraceError(f"{source}: line 1: empty trace (no timestamps)")
    ops = _parse_fast(body)
    if ops is None:
        _raise_first_error(body, source)
        raise TraceError(f"{source}: malformed trace")  # unreachable: the scan names a line
    _validate(ops, source)
    return ops


def _parse_fast(body: bytes) -> np.ndarray | None:
    """Values when ``body`` is exactly one unsigned integer per line, else None."""
    buf = np.frombuffer(body, dtype=np.uint8)
    is_digit = (buf >= _ORD_0) & (buf <= _ORD_9)
    is_space = (buf == _ORD_SPACE) | (buf == _ORD_TAB) | (buf == _ORD_CR)
    is_newline = buf == _ORD_LF
    if not np.all(is_digit | is_space | is_newline):
        return None
    # Digit runs are the numbers: a run starts where a digit follows a non-digit.
    starts = np.flatnonzero(is_digit & ~np.concatenate(([False], is_digit[:-1])))
    ends = np.flatnonzero(is_digit & ~np.concatenate((is_digit[1:], [False])))
    newlines = np.flatnonzero(is_newline)
    # One number per line: number i starts before newline i, number i+1 after it.
    if starts.size != newlines.size + 1:
        return None
    if not (np.all(starts[:-1] < newlines) and np.all(newlines < starts[1:])):
        return None
    if np.any(ends - starts + 1 > MAX_DIGITS):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns (not raises) when it stops early
        try:
            ops = np.fromstring(body, dtype=np.int64, sep=" ")
        except (ValueError, DeprecationWarning):
            return None
    return ops if ops.size == starts.size else None


def _raise_first_error(body: bytes, source: str) -> None:
    """Scan line by line and raise for the first malformed line (slow path, errors only)."""
    for line_no, raw in enumerate(body.split(b"\n"), start=1):
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            raise TraceError(f"{source}: line {line_no}: blank line inside the trace")
        fields = text.split()
        if len(fields) > 1:
            raise TraceError(f"{source}: line {line_no}: more than one value ({text!r})")
        if text.startswith("-") and text[1:].isdigit():
            raise TraceError(f"{source}: line {line_no}: negative timestamp {text}")
        if not (text.isascii() and text.isdigit()):
            raise TraceError(f"{source}: line {line_no}: not a non-negative integer ({text!r})")
        if len(text) > MAX_DIGITS:
            raise TraceError(f"{source}: line {line_no}: timestamp too large ({text})")


def _validate(ops: np.ndarray, source: str) -> None:
    """Order and period checks; index i is line i+1 because the shape check passed."""
    steps = np.diff(ops)
    if steps.size and steps.min() < 0:
        i = int(np.argmax(steps < 0)) + 1
        raise TraceError(
            f"{source}: line {i + 1}: timestamp {int(ops[i])} is before the previous "
            f"one ({int(ops[i - 1])})"
        )
    if ops[-1] <= 0:
        raise TraceError(
            f"{source}: line {ops.size}: last timestamp is 0; it is the loop period and must be > 0"
        )


def format_mahimahi(trace: Trace) -> str:
    """The trace as mahimahi text (one number per line, newline-terminated)."""
    return "\n".join(map(str, trace.opportunities_ms.tolist())) + "\n"


def write_mahimahi(trace: Trace, path: str | os.PathLike[str]) -> Path:
    """Write ``trace`` for mahimahi's ``mm-link`` (or any reader here); returns the path.

    Written to a temporary name and renamed, so a reader never sees a partial file.
    """
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(format_mahimahi(trace), encoding="ascii")
    tmp.replace(p)
    return p
