"""bench/thin_links.py: links thinner than a sender's minimum target."""

from __future__ import annotations

import json

import pytest

from bench.thin_links import links, main
from loki.learned.models import model_path, with_min_target


def test_the_three_links_are_what_they_say() -> None:
    by = {x.name: x for x in links()}
    assert set(by) == {"thin-120k-unbounded", "thin-150k-300pkt", "step-2M-100k-2M"}
    assert by["thin-150k-300pkt"].queue_packets == 300
    assert by["thin-120k-unbounded"].trace.capacity_bps(0, 60_000) == pytest.approx(
        120_000, rel=0.02
    )
    assert by["step-2M-100k-2M"].trace.capacity_bps(15_000, 45_000) == pytest.approx(
        100_000, rel=0.05
    )


def test_a_minimum_that_never_gives_way_fills_the_queue_and_the_gated_one_does_not(
    tmp_path, capsys
) -> None:
    fixed = with_min_target(model_path("loki"), tmp_path / "fixed.npz", 200_000, 1e9)
    out = tmp_path / "thin.json"
    argv = ["--controllers", f"loki,{fixed}", "--links", "thin-150k-300pkt", "--seeds", "1"]
    assert main([*argv, "--json", str(out)]) == 0
    assert "| loki | thin-150k-300pkt | 1 |" in capsys.readouterr().out
    loki, held = json.loads(out.read_text())
    assert held["frame_delay_p95_ms"] > 8_000 and held["stall_rate"] > 0.15
    assert loki["frame_delay_p95_ms"] < 0.25 * held["frame_delay_p95_ms"]
    assert loki["stall_rate"] < 0.05


def test_bad_input_is_refused_in_one_line(capsys) -> None:
    for argv, says in (
        (["--links", "thin-1k"], "unknown link(s) thin-1k"),
        (["--seeds", "0"], "--seeds must be > 0"),
        (["--controllers", "nope"], "nope"),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        assert says in capsys.readouterr().err
