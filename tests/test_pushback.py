"""loki/pushback.py: ``pushback:NAME``, any controller behind congestion-window pushback."""

from __future__ import annotations

import pytest

from loki.controllers import make_controller
from loki.emu.session import LinkConfig, Session, SessionConfig
from loki.pushback import PushbackController
from traces import generators


class Watched(PushbackController):
    """Records (time, pushback ratio, target) at every process interval (no feedback comes
    during an outage, so decisions alone would not show it)."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.seen: list[tuple[int, float, int]] = []

    def on_process_interval(self, at_us: int) -> None:
        super().on_process_interval(at_us)
        self.seen.append((at_us, self.pushback.encoding_rate_ratio, self.target_bps))


def run(name: str, trace, watch: bool = False):
    ctl = make_controller(name, trace=trace)
    if watch:
        assert isinstance(ctl, PushbackController)
        ctl = Watched(ctl.inner)
    res = Session(ctl, LinkConfig(trace, delay_ms=20, queue_packets=300), SessionConfig(30.0)).run()
    return ctl, res, getattr(ctl, "seen", [])


def test_a_link_that_never_fills_the_window_sees_the_inner_controller_exactly():
    trace = generators.constant(2.5e6, 30_000)
    _, gcc, _ = run("gcc", trace)
    ctl, pb, _ = run("pushback:gcc", trace)
    assert isinstance(ctl, PushbackController)
    assert pb.decisions == gcc.decisions
    assert ctl.pushback.encoding_rate_ratio == 1.0


def test_an_outage_pushes_the_encoder_down_and_the_link_coming_back_restores_it():
    # 2 s without a delivery every 15 s, 3 Mbps otherwise; 300 packets of queue.
    trace = generators.periodic_outages(3e6, 15_000, 2_000, 30_000)
    _, pb, seen = run("pushback:gcc", trace, watch=True)
    in_outage = [(r, t) for at, r, t in seen if 14_000_000 <= at < 15_000_000]  # 13-15 s
    assert min(t for _, t in in_outage) == 30_000  # the pushback minimum
    after = [(r, t) for at, r, t in seen if 16_500_000 <= at < 17_000_000]
    assert min(r for r, _ in after) == 1.0  # back to the estimate within 2 s of the link
    _, gcc, _ = run("gcc", trace)
    # What it is for: the queue does not fill during the outage, so less freeze after it.
    assert pb.qoe.stall_rate < 0.8 * gcc.qoe.stall_rate
    assert pb.qoe.frame_delay_p95_ms < gcc.qoe.frame_delay_p95_ms


def test_the_minimum_is_libwebrtcs_unless_named():
    assert make_controller("pushback:gcc").pushback.min_pushback_target_bps == 30_000
    ctl = make_controller("pushback:374:scaled:0.9:gcc")
    assert ctl.pushback.min_pushback_target_bps == 374_000
    assert ctl.inner.factor == 0.9


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("pushback:", "pushback needs a controller"),
        ("pushback:374:", "pushback needs a controller"),
        ("pushback:0:gcc", "minimum must be > 0 kbps"),
        ("pushback:nan:gcc", "minimum must be > 0 kbps"),
    ],
)
def test_bad_pushback_names_are_refused_with_what_is_wanted(name: str, message: str):
    with pytest.raises(ValueError, match=message):
        make_controller(name)


def test_pushback_of_an_unknown_controller_names_it():
    with pytest.raises(ValueError, match="unknown controller 'nope'"):
        make_controller("pushback:nope")


def test_drop_mode_skips_frames_instead_of_lowering_the_target():
    outages = generators.periodic_outages(3e6, 15_000, 2_000, 30_000)
    sessions = {}
    for trace in (generators.constant(2.5e6, 30_000), outages):
        ctl = make_controller("pushback:drop:gcc", trace=trace)
        s = Session(ctl, LinkConfig(trace, delay_ms=20, queue_packets=300), SessionConfig(30.0))
        s.run()
        assert ctl.target_bps == ctl.inner.target_bps  # the estimate is what the pacer gets
        sessions[trace.name] = s
    assert sessions["constant-2.5mbps"].frames_skipped == 0
    # Two outages of 2 s at 30 fps: most of their frames are not encoded, little else is.
    assert 60 <= sessions["outages"].frames_skipped <= 200


def test_the_live_sender_skips_what_the_controller_says(tmp_path):
    """Real aiortc + libvpx: an outage at 3-5 s of an 8 s session; the encoding thread asks the
    controller (under the sender's lock) and leaves the outage's frames unencoded."""
    pytest.importorskip("aiortc")
    import asyncio

    from rtc.session import LiveConfig, run_live
    from traces.mahimahi import write_mahimahi

    assert not make_controller("pushback:gcc").skips_frames
    assert make_controller("pushback:drop:gcc").skips_frames
    path = tmp_path / "outage.mahi"
    write_mahimahi(generators.periodic_outages(3e6, 5_000, 2_000, 10_000), path)
    stats = {}
    for name in ("gcc", "pushback:drop:gcc"):
        config = LiveConfig(
            source=("trace", str(path)), controller=name, duration_s=8.0, queue_packets=300
        )
        stats[name] = asyncio.run(run_live(config)).stats
    assert stats["gcc"]["frames_skipped_by_controller"] == 0
    # The outage's 2 s at 30 fps (60 frames, less the time the window takes to fill), then a
    # falling share while the ratio climbs back by x1.05 per update after the link returns:
    # 73-94 frames in ten runs of the real-time session; never the whole session's 240.
    assert 15 <= stats["pushback:drop:gcc"]["frames_skipped_by_controller"] <= 120
    assert stats["pushback:drop:gcc"]["frames_encoded"] > 120


def test_a_sender_that_sends_nothing_has_nothing_in_flight():
    """Regression: the first version counted the bytes the stage allowed, not the bytes sent.
    6 s at 50 kbps (below the encoder's floor: frames skipped, nothing sent), then 18 Mbps: it
    kept counting, the window never emptied and the stream stayed off (37 frames rendered in
    20 s against loki's 317). With the sender's own count the stream comes back."""
    trace = generators.steps([(6_000, 50e3), (14_000, 18e6)])
    rendered = {}
    for name in ("loki", "pushback:drop:loki"):
        ctl = make_controller(name, trace=trace)
        link = LinkConfig(trace, delay_ms=50, queue_packets=300)
        rendered[name] = Session(ctl, link, SessionConfig(20.0)).run().qoe.frames_rendered
    assert rendered["pushback:drop:loki"] >= 0.8 * rendered["loki"]


def test_the_emulator_tells_the_bytes_sent_after_the_newest_reported_packet():
    trace = generators.periodic_outages(3e6, 15_000, 2_000, 30_000)
    told: list[tuple[int, int]] = []

    class Listening(PushbackController):
        def on_outstanding_data(self, outstanding_bytes: int, at_us: int) -> None:
            super().on_outstanding_data(outstanding_bytes, at_us)
            told.append((at_us, outstanding_bytes))

    ctl = Listening(make_controller("gcc"))
    s = Session(ctl, LinkConfig(trace, delay_ms=20, queue_packets=300), SessionConfig(30.0))
    s.run()
    steady = [b for t, b in told if 5_000_000 <= t < 12_000_000]
    outage = [b for t, b in told if 14_500_000 <= t < 15_000_000]
    # About an RTT and a feedback interval of a 2.5-3.4 Mbps stream in steady state; in the
    # outage, more than a second of it, and nothing is told to a controller that does not ask.
    assert max(steady) < 100_000 < min(outage)
    assert not make_controller("gcc").uses_outstanding_data
