"""load_trace dispatch, find_traces discovery, trace_family, and the real shared folder."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from traces.load import find_traces, load_trace, trace_family, trace_format, trace_name
from traces.trace import TraceError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"

MAHI_TEXT = "".join(f"{i}\n" for i in range(1, 1001))  # 12 Mbit/s for 1 s
COOKED_CSV = "time_s,mbps\n0,12\n1,end\n"
COOKED_PENSIEVE = "0.0\t12.0\n0.5\t12.0\n"
JSON_TEXT = json.dumps({"uplink": {"trace_pattern": [{"duration": 1000, "capacity": 12000}]}})


def needs_shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared traces not found at {SHARED} (expected ../shared/traces)")
    return SHARED


@pytest.mark.parametrize(
    ("filename", "text", "fmt", "name"),
    [
        ("a.mahi", MAHI_TEXT, "mahimahi", "a"),
        ("ATT-LTE-driving.up", MAHI_TEXT, "mahimahi", "ATT-LTE-driving.up"),
        ("ATT-LTE-driving.down", MAHI_TEXT, "mahimahi", "ATT-LTE-driving.down"),
        ("plain", MAHI_TEXT, "mahimahi", "plain"),
        ("b.csv", COOKED_CSV, "cooked", "b"),
        ("c.txt", COOKED_PENSIEVE, "cooked", "c"),
        ("norway_bus_1", COOKED_PENSIEVE, "cooked", "norway_bus_1"),
        ("Driving_B_2019.12.14_10.16.30", MAHI_TEXT, "mahimahi", "Driving_B_2019.12.14_10.16.30"),
        ("d.json", JSON_TEXT, "opennetlab", "d"),
        ("e.trace", JSON_TEXT, "opennetlab", "e.trace"),
    ],
)
def test_dispatch_by_suffix_or_content(
    tmp_path: Path, filename: str, text: str, fmt: str, name: str
) -> None:
    path = tmp_path / filename
    path.write_text(text)
    assert trace_format(path) == fmt
    assert trace_name(path) == name
    trace = load_trace(path)
    assert trace.name == name
    assert trace.meta["format"] == fmt
    assert trace.meta["source"] == str(path)
    assert trace.meta["family"] == tmp_path.name
    assert trace.opportunities_ms.tolist() == list(range(1, 1001))


def test_load_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such trace file"):
        load_trace(tmp_path / "missing.mahi")
    with pytest.raises(TraceError, match="is a folder"):
        load_trace(tmp_path)
    bad = tmp_path / "bad.mahi"
    bad.write_text("1\n2\nx\n")
    with pytest.raises(TraceError, match=r"bad\.mahi: line 3:"):
        load_trace(bad)
    empty = tmp_path / "noext"
    empty.write_text("\n\n")
    with pytest.raises(TraceError, match="line 1: empty"):
        load_trace(empty)


def make_shared_like(root: Path) -> Path:
    """A set folder laid out like ../shared/traces/<set>."""
    s = root / "my_set"
    (s / "cooked").mkdir(parents=True)
    (s / "json").mkdir()
    (s / "SOURCE.json").write_text("{}")
    for n in ("t1", "t2"):
        (s / f"{n}.mahi").write_text(MAHI_TEXT)
        (s / "cooked" / f"{n}.csv").write_text(COOKED_CSV)
    (s / "json" / "t1.json").write_text(JSON_TEXT)
    (s / ".hidden.mahi").write_text(MAHI_TEXT)
    (s / "notes.md").write_text("not a trace")
    return s


def test_find_traces_prefers_mahimahi_over_its_copies(tmp_path: Path) -> None:
    s = make_shared_like(tmp_path)
    assert find_traces(s) == [s / "t1.mahi", s / "t2.mahi"]
    assert find_traces(tmp_path) == [s / "t1.mahi", s / "t2.mahi"]  # recursive
    assert find_traces(s, recursive=False) == [s / "t1.mahi", s / "t2.mahi"]


def test_find_traces_other_formats(tmp_path: Path) -> None:
    s = make_shared_like(tmp_path)
    assert find_traces(s / "cooked") == [s / "cooked" / "t1.csv", s / "cooked" / "t2.csv"]
    assert find_traces(s / "json") == [s / "json" / "t1.json"]
    assert find_traces(s, formats=["cooked"]) == [s / "cooked" / "t1.csv", s / "cooked" / "t2.csv"]
    assert find_traces(s, formats=["opennetlab", "mahimahi"]) == sorted(
        [s / "json" / "t1.json", s / "t1.mahi", s / "t2.mahi"]
    )
    assert find_traces(s / "t2.mahi") == [s / "t2.mahi"]
    with pytest.raises(ValueError, match="unknown trace format"):
        find_traces(s, formats=["pcap"])


def test_find_traces_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such trace file or folder"):
        find_traces(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TraceError, match=r"no trace files \(.mahi, .up, .down, .csv, .json\)"):
        find_traces(tmp_path / "empty")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "SOURCE.json").write_text("{}")
    with pytest.raises(TraceError, match="no trace files"):
        find_traces(tmp_path / "docs")


def test_trace_family(tmp_path: Path) -> None:
    s = make_shared_like(tmp_path)
    assert trace_family(s / "t1.mahi") == "my_set"
    assert trace_family(s / "cooked" / "t1.csv") == "my_set"
    assert trace_family(s / "json" / "t1.json") == "my_set"
    loose = tmp_path / "lab_runs" / "cooked"
    loose.mkdir(parents=True)
    assert trace_family(tmp_path / "lab_runs" / "x.mahi") == "lab_runs"
    assert trace_family(loose / "x.csv") == "lab_runs"


def test_shared_folder_yields_every_listed_mahi_once() -> None:
    root = needs_shared()
    paths = find_traces(root)
    assert all(p.suffix == ".mahi" for p in paths)
    families = Counter(trace_family(p) for p in paths)
    for source_file in sorted(root.glob("*/SOURCE.json")):
        source = json.loads(source_file.read_text())
        assert families[source_file.parent.name] == source["num_traces"]
        listed = {e["name"] for e in source["traces"]}
        assert {p.stem for p in paths if p.parent == source_file.parent} == listed
    assert sum(families.values()) == len(paths)


def test_shared_each_format_loads_with_its_family() -> None:
    root = needs_shared()
    mahi = load_trace(root / "norway_hsdpa_3g" / "norway_bus_1.mahi")
    cooked = load_trace(root / "norway_hsdpa_3g" / "cooked" / "norway_bus_1.csv")
    net = load_trace(root / "opennetlab_gym" / "json" / "4G_700kbps.json")
    assert mahi.meta["family"] == cooked.meta["family"] == "norway_hsdpa_3g"
    assert net.meta["family"] == "opennetlab_gym"
    assert mahi.period_ms == cooked.period_ms == 155_250
    assert mahi.opportunities_ms.size == cooked.opportunities_ms.size
    shared_net = load_trace(root / "opennetlab_gym" / "4G_700kbps.mahi")
    assert np.array_equal(net.opportunities_ms, shared_net.opportunities_ms)
