"""Cooked throughput series: parsing, the hold rule, and reproducing the shared .mahi files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from traces.cooked import (
    parse_cooked,
    read_cooked,
    read_cooked_trace,
    series_from_arrays,
    series_to_trace,
)
from traces.mahimahi import read_mahimahi
from traces.trace import TraceError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"


def needs_shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared traces not found at {SHARED} (expected ../shared/traces)")
    return SHARED


def test_twelve_mbps_for_one_second_is_a_thousand_opportunities() -> None:
    trace = series_to_trace(parse_cooked("0 12\n1 end\n"), "c")
    assert trace.opportunities_ms.tolist() == list(range(1, 1001))
    assert trace.meta["appended_final_opportunity"] is False


@pytest.mark.parametrize(
    "text",
    [
        "0.0\t12.0\n0.5\t6.0\n",  # Pensieve: whitespace, no header, no end
        "time_s,mbps\n0.000,12\n0.500,6\n",  # CSV with header
        "0,12\n0.5,6\n",  # CSV without header
        "# comment\n\n0 12\n0.5 6\n1.0 end\n",  # comment, blank line, end sentinel
        "time_s,mbps\r\n0.000,12\r\n0.500,6\r\n1.000,end\r\n",
    ],
)
def test_accepted_shapes_give_the_same_series(text: str) -> None:
    series = parse_cooked(text)
    assert series.times_ms.tolist() == [0, 500]
    assert series.rates_mbps.tolist() == [12.0, 6.0]
    assert series.end_ms == 1000  # without an end line: last sample held one median interval


def test_each_sample_holds_until_the_next() -> None:
    # 12 Mbit/s for 0.5 s, then nothing: 500 opportunities, then the one closing the period.
    trace = series_to_trace(parse_cooked("0 12\n0.5 0\n1.0 end\n"), "hold")
    assert trace.opportunities_ms.tolist() == [*range(1, 501), 1000]
    assert trace.meta["appended_final_opportunity"] is True


def test_last_sample_is_held_for_the_median_interval() -> None:
    series = parse_cooked("0 1\n1 1\n2 1\n4 1\n5 1\n")  # intervals 1,1,2,1 -> median 1 s
    assert series.end_ms == 6000


def test_series_starting_late_is_shifted_to_zero() -> None:
    series = parse_cooked("10.0 12\n10.5 6\n11.0 end\n")
    assert series.times_ms.tolist() == [0, 500]
    assert series.end_ms == 1000


def test_mean_rate_of_the_conversion() -> None:
    series = series_from_arrays([0, 2, 3], [3.0, 0.6, 9.0], end_s=5)
    assert series.mean_mbps() == pytest.approx((6 + 0.6 + 18) / 5)
    trace = series_to_trace(series, "m")
    bits = trace.opportunities_ms.size * 1500 * 8
    assert bits / 5.0 == pytest.approx(series.mean_mbps() * 1e6, abs=1500 * 8 / 5)


MALFORMED = [
    ("time_s,mbps\n0,1\nabc,2\n", 3, "time is not a number"),
    ("0 1\n1 x\n", 2, "throughput is not a number"),
    ("0 1\n1 -2\n", 2, "finite and >= 0"),
    ("0 1\n1 nan\n", 2, "finite and >= 0"),
    ("0 1\n2 1\n1 1\n", 3, "before the previous"),
    ("0 1 2\n", 1, "expected 'time_s mbps'"),
    ("0 1\n1 end\n2 1\n", 3, "after the 'end' line"),
]


@pytest.mark.parametrize(("text", "line", "reason"), MALFORMED)
def test_malformed_series_names_file_and_line(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(TraceError) as err:
        read_cooked(path)
    assert f"{path}: line {line}:" in str(err.value)
    assert reason in str(err.value)


def test_series_without_a_duration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("0 5\n")
    with pytest.raises(TraceError, match="duration is unknown"):
        read_cooked(path)
    path.write_text("time_s,mbps\n")
    with pytest.raises(TraceError, match="no throughput samples"):
        read_cooked(path)


def test_read_cooked_trace_names_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "bus_7.csv"
    path.write_text("time_s,mbps\n0,2.4\n1,1.2\n2,end\n")
    trace = read_cooked_trace(path)
    assert trace.name == "bus_7"
    assert trace.meta["format"] == "cooked"
    assert trace.meta["mean_mbps"] == pytest.approx(1.8)
    assert trace.opportunities_ms.size == 300  # (2.4 + 1.2) Mbit over 12000 bit


def _shared_pair(set_name: str, trace_name: str) -> tuple[Path, Path, dict]:
    root = needs_shared() / set_name
    source = json.loads((root / "SOURCE.json").read_text())
    entry = next(e for e in source["traces"] if e["name"] == trace_name)
    base = trace_name.split("_part")[0]
    csvs = [root / "cooked" / f"{n}.csv" for n in (trace_name, base, f"{base}_part0")]
    return next(p for p in csvs if p.exists()), root / f"{trace_name}.mahi", entry


def _convert_like_the_set(csv: Path, mahi: Path, entry: dict) -> tuple[np.ndarray, np.ndarray]:
    shared = read_mahimahi(mahi).opportunities_ms
    start_ms = round(entry.get("offset_in_original_s", 0.0) * 1000)
    ours = series_to_trace(
        read_cooked(csv), entry["name"], start_ms=start_ms, duration_ms=int(shared[-1])
    )
    assert ours.meta["appended_final_opportunity"] == entry["appended_final_opportunity"]
    return ours.opportunities_ms, shared


@pytest.mark.parametrize(
    ("set_name", "trace_name"),
    [
        ("fcc_broadband", "test_fcc_trace_14731_http---www.facebook.com_180_0"),
        ("opennetlab_gym", "4G_500kbps"),
        ("opennetlab_gym", "WIRED_35mbps"),
        # A 2 MB cut in the middle of a long session: the running total is not restarted.
        ("ireland_5g_ucc", "Driving_B_2019.12.17_07.32.39_part0"),
        ("ireland_5g_ucc", "Driving_B_2019.12.17_07.32.39_part3"),
    ],
)
def test_shared_cooked_reproduces_the_shared_mahi_exactly(set_name: str, trace_name: str) -> None:
    ours, shared = _convert_like_the_set(*_shared_pair(set_name, trace_name))
    assert np.array_equal(ours, shared)


def test_shared_norway_differs_only_by_csv_rounding() -> None:
    """The CSV keeps 6 significant digits; the set was converted from the full values, so a
    few opportunities that sit on a 1500-byte boundary move by one millisecond."""
    ours, shared = _convert_like_the_set(*_shared_pair("norway_hsdpa_3g", "norway_bus_1"))
    assert ours.size == shared.size
    assert np.max(np.abs(ours - shared)) == 1
    assert np.count_nonzero(ours != shared) / shared.size < 0.01


def test_shared_ireland_difference_is_the_rounded_sample() -> None:
    """Restoring one CSV value to full precision (a mean of three 1 s readings, 25.024/3
    Mbit/s, written as 8.34133) makes the conversion match the shared file exactly."""
    csv, mahi, entry = _shared_pair("ireland_5g_ucc", "Driving_B_2019.12.16_11.49.59")
    ours, shared = _convert_like_the_set(csv, mahi, entry)
    assert 0 < np.count_nonzero(ours != shared) < 100
    series = read_cooked(csv)
    rates = series.rates_mbps.copy()
    rates[np.flatnonzero(rates == 8.34133)] = 25.024 / 3
    fixed = series_from_arrays(series.times_ms / 1000, rates, end_s=series.end_ms / 1000)
    assert np.array_equal(series_to_trace(fixed, "fixed").opportunities_ms, shared)
