"""OpenNetLab JSON: capacity to opportunities, per-segment loss/RTT in meta, glitches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from traces.mahimahi import read_mahimahi
from traces.opennetlab import opennetlab_to_trace, read_opennetlab, segment_value_at
from traces.trace import TraceError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"


def needs_shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared traces not found at {SHARED} (expected ../shared/traces)")
    return SHARED


def doc(*segments: dict) -> dict:
    return {"type": "video", "downlink": {}, "uplink": {"trace_pattern": list(segments)}}


def test_capacity_becomes_opportunities_and_extras_go_to_meta() -> None:
    trace = opennetlab_to_trace(
        doc(
            {"duration": 1000, "capacity": 12000, "loss": 0.0, "rtt": 20, "jitter": 0},
            {"duration": 500, "capacity": 0, "loss": 0.1, "rtt": 80, "jitter": 5},
            {"duration": 500, "capacity": 6000, "loss": 0.02, "rtt": 40, "jitter": 1},
        ),
        "net",
    )
    ops = trace.opportunities_ms.tolist()
    assert ops == [*range(1, 1001), *range(1502, 2001, 2)]
    assert trace.period_ms == 2000
    meta = trace.meta
    assert meta["format"] == "opennetlab" and meta["type"] == "video"
    assert meta["segment_start_ms"].tolist() == [0, 1000, 1500]
    assert meta["segment_duration_ms"].tolist() == [1000, 500, 500]
    assert meta["capacity_kbps"].tolist() == [12000, 0, 6000]
    assert meta["loss_rate"].tolist() == [0.0, 0.1, 0.02]
    assert meta["rtt_ms"].tolist() == [20, 80, 40]
    assert meta["jitter_ms"].tolist() == [0, 5, 1]
    assert meta["fields_present"] == ("loss", "rtt", "jitter")
    assert meta["glitch_steps_replaced"] == 0


def test_segment_value_follows_the_loop() -> None:
    trace = opennetlab_to_trace(
        doc(
            {"duration": 1000, "capacity": 1000, "loss": 0.0},
            {"duration": 1000, "capacity": 1000, "loss": 0.3},
        ),
        "loop",
    )
    assert segment_value_at(trace, "loss_rate", 0) == 0.0
    assert segment_value_at(trace, "loss_rate", 999) == 0.0
    assert segment_value_at(trace, "loss_rate", 1000) == 0.3
    assert segment_value_at(trace, "loss_rate", 2500) == 0.0  # second loop, first segment
    assert segment_value_at(trace, "loss_rate", 3999) == 0.3
    with pytest.raises(KeyError):
        segment_value_at(trace, "bandwidth", 0)


def test_absent_optional_fields_are_zero_and_not_listed() -> None:
    trace = opennetlab_to_trace(doc({"duration": 200.0, "capacity": 2.4}), "bare")
    assert trace.meta["fields_present"] == ()
    assert trace.meta["loss_rate"].tolist() == [0.0]
    assert trace.meta["rtt_ms"].tolist() == [0.0]


def test_fractional_durations_do_not_drift() -> None:
    trace = opennetlab_to_trace(doc(*[{"duration": 100.4, "capacity": 12000}] * 10), "frac")
    assert trace.period_ms == 1004
    assert trace.meta["segment_start_ms"].tolist() == [round(100.4 * i) for i in range(10)]


def test_glitch_steps_take_the_previous_capacity() -> None:
    segments = [{"duration": 200, "capacity": c} for c in (1000, 1200, 3.3e7, 5e6, 900)]
    trace = opennetlab_to_trace(doc(*segments), "g")
    assert trace.meta["capacity_kbps"].tolist() == [1000, 1200, 1200, 1200, 900]
    assert trace.meta["glitch_steps_replaced"] == 2
    raw = opennetlab_to_trace(doc(*segments), "g", glitch_factor=None)
    assert raw.meta["capacity_kbps"].tolist() == [1000, 1200, 3.3e7, 5e6, 900]
    assert raw.opportunities_ms.size > 100 * trace.opportunities_ms.size


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        ({"downlink": {}}, "no 'uplink'"),
        ({"uplink": {"trace_pattern": []}}, "non-empty list"),
        (doc({"duration": 100}), "trace_pattern[0]: needs 'duration'"),
        (
            doc({"duration": 100, "capacity": 1}, {"duration": 100, "capacity": "x"}),
            "trace_pattern[1]",
        ),
        (doc({"duration": 100, "capacity": 1, "loss": 5}), "not a fraction"),
        (doc({"duration": -5, "capacity": 1}), ">= 0"),
        (doc({"duration": 0, "capacity": 1}), "lasts 0 ms"),
    ],
)
def test_malformed_documents_name_the_file_and_segment(
    tmp_path: Path, document: dict, reason: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(TraceError) as err:
        read_opennetlab(path)
    assert str(path) in str(err.value)
    assert reason in str(err.value)


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "uplink": {\n    "trace_pattern": [\n      {"duration": 1,,}\n')
    with pytest.raises(TraceError, match=r"broken\.json: line 4: not valid JSON"):
        read_opennetlab(path)


def test_shared_json_reproduces_the_shared_mahi() -> None:
    root = needs_shared() / "opennetlab_gym"
    source = {e["name"]: e for e in json.loads((root / "SOURCE.json").read_text())["traces"]}
    assert len(source) == 7
    for name, entry in source.items():
        trace = read_opennetlab(root / "json" / f"{name}.json")
        shared = read_mahimahi(root / f"{name}.mahi")
        assert np.array_equal(trace.opportunities_ms, shared.opportunities_ms), name
        assert trace.meta["glitch_steps_replaced"] == entry["glitch_steps_replaced"], name


def test_shared_wired_trace_keeps_its_loss_and_jitter() -> None:
    trace = read_opennetlab(needs_shared() / "opennetlab_gym" / "json" / "WIRED_200kbps.json")
    assert trace.meta["fields_present"] == ("loss", "jitter")
    assert trace.meta["loss_rate"].size == trace.meta["segment_start_ms"].size == 412
    assert trace.meta["type"] == "video"
