"""mahimahi trace files: round trip, accepted whitespace, refused shapes with file and line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from traces.mahimahi import format_mahimahi, parse_mahimahi, read_mahimahi, write_mahimahi
from traces.trace import Trace, TraceError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"


def needs_shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared traces not found at {SHARED} (expected ../shared/traces)")
    return SHARED


def test_round_trip_keeps_every_opportunity(tmp_path: Path) -> None:
    ops = np.array([0, 0, 3, 3, 3, 7, 120, 120, 500])
    path = write_mahimahi(Trace("x", ops), tmp_path / "link.mahi")
    back = read_mahimahi(path)
    assert back.name == "link"
    assert np.array_equal(back.opportunities_ms, ops)
    assert back.period_ms == 500
    assert back.meta == {"source": str(path), "format": "mahimahi"}
    assert path.read_text() == "0\n0\n3\n3\n3\n7\n120\n120\n500\n"
    assert not (tmp_path / "link.mahi.tmp").exists()


def test_round_trip_random_traces(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    for i in range(5):
        ops = np.sort(rng.integers(0, 10_000, rng.integers(1, 3000)))
        ops[-1] = max(ops[-1], 1)
        path = write_mahimahi(Trace("r", ops), tmp_path / f"r{i}.mahi")
        assert np.array_equal(read_mahimahi(path).opportunities_ms, ops)


def test_format_matches_seq() -> None:
    """A 12 Mbit/s link is mahimahi's `seq 1 1000`."""
    text = format_mahimahi(Trace("c", np.arange(1, 1001)))
    assert text == "".join(f"{i}\n" for i in range(1, 1001))


@pytest.mark.parametrize(
    "text",
    [
        "1\n2\n3",
        "1\n2\n3\n\n\n",
        " 1 \n\t2\t\n  3  \n",
        "1\r\n2\r\n3\r\n\r\n",
        "1\n2\n3\n   \n\t\n",
    ],
)
def test_whitespace_around_numbers_and_trailing_blank_lines_are_fine(text: str) -> None:
    assert parse_mahimahi(text, "t").tolist() == [1, 2, 3]


MALFORMED = [
    ("", 1, "empty"),
    ("\n  \n\n", 1, "empty"),
    ("1\n2\nabc\n4\n", 3, "not a non-negative integer"),
    ("1\n2.5\n3\n", 2, "not a non-negative integer"),
    ("1\n2\n-3\n4\n", 3, "negative"),
    ("1\n5\n4\n9\n", 3, "before the previous"),
    ("0\n0\n0\n", 3, "last timestamp is 0"),
    ("1\n2\n\n3\n", 3, "blank line"),
    ("\n1\n2\n", 1, "blank line"),
    ("1\n2 3\n4\n", 2, "more than one value"),
    ("1\n2,3\n4\n", 2, "not a non-negative integer"),
    ("1\n" + "9" * 30 + "\n", 2, "too large"),
    ("1\n+2\n3\n", 2, "not a non-negative integer"),
]


@pytest.mark.parametrize(("text", "line", "reason"), MALFORMED)
def test_malformed_trace_names_file_and_line(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = tmp_path / "bad.mahi"
    path.write_text(text)
    with pytest.raises(TraceError) as err:
        read_mahimahi(path)
    message = str(err.value)
    assert str(path) in message
    assert f"line {line}:" in message
    assert reason in message


def test_malformed_bytes_are_reported_not_crashing(tmp_path: Path) -> None:
    path = tmp_path / "bin.mahi"
    path.write_bytes(b"1\n2\n\xff\xfe\n4\n")
    with pytest.raises(TraceError, match="line 3:"):
        read_mahimahi(path)


def test_error_deep_in_a_large_file_names_the_right_line(tmp_path: Path) -> None:
    n = 300_000
    lines = [str(i) for i in range(1, n + 1)]
    lines[n - 7] = "12x"
    path = tmp_path / "big.mahi"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceError, match=f"line {n - 6}: not a non-negative integer"):
        read_mahimahi(path)
    lines[n - 7] = "5"  # now a decrease
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TraceError, match=f"line {n - 6}: timestamp 5 is before"):
        read_mahimahi(path)


def test_trace_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_mahimahi("x", "t")


def test_shared_largest_trace_reads_fast_and_matches_its_source_entry() -> None:
    root = needs_shared()
    paths = sorted(root.glob("*/*.mahi"), key=lambda p: p.stat().st_size)
    largest = paths[-1]
    start = time.perf_counter()
    trace = read_mahimahi(largest)
    elapsed_s = time.perf_counter() - start
    entry = _source_entry(largest)
    assert trace.opportunities_ms.size == entry["lines"]
    assert trace.period_ms == round(entry["duration_s"] * 1000)
    assert np.array_equal(trace.opportunities_ms, np.loadtxt(largest, dtype=np.int64))
    # Half a million lines: tens of ms here; a Python line loop takes ten times longer.
    assert elapsed_s < 1.0


def test_shared_cellular_set_all_read_with_listed_line_counts_and_rates() -> None:
    root = needs_shared() / "mahimahi_cellular_us"
    source = json.loads((root / "SOURCE.json").read_text())
    assert len(source["traces"]) == 13
    for entry in source["traces"]:
        trace = read_mahimahi(root / f"{entry['name']}.mahi")
        assert trace.opportunities_ms.size == entry["lines"]
        # SOURCE.json counts 1500-byte packets per opportunity.
        mean_mbps = trace.opportunities_ms.size * 1500 * 8 / trace.period_ms / 1000
        assert mean_mbps == pytest.approx(entry["mean_mbps"], abs=1e-4)


def _source_entry(path: Path) -> dict:
    source = json.loads((path.parent / "SOURCE.json").read_text())
    return next(e for e in source["traces"] if e["name"] == path.stem)
