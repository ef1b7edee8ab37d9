"""The emulated session end to end: feedback, NACK, PLI, accounting, determinism."""

import numpy as np
import pytest

from loki.controllers import make_controller
from loki.emu.path import Path
from loki.emu.session import (
    MAX_RTP_PAYLOAD_BYTES,
    PACKET_OVERHEAD_BYTES,
    LinkConfig,
    Session,
    SessionConfig,
)
from traces.generators import constant, steps


def session(trace, controller="fixed:1500", duration_s=20.0, seed=0, **link):
    return Session(
        make_controller(controller, trace=trace),
        LinkConfig(trace, **link),
        SessionConfig(duration_s=duration_s, seed=seed),
    )


def rtx_count(s: Session) -> int:
    return int(sum(s.pkt_rtx))


def test_clean_link_renders_every_frame_smoothly():
    s = session(constant(4e6, 20_000))
    q = s.run().qoe
    assert q.stall_rate == 0.0
    assert q.frames_rendered >= q.frames_sent - 2  # the last frames may be in flight
    assert q.loss_rate == 0.0
    assert 1300 < q.bitrate_kbps < 1600  # the encoder follows 1.5 Mbps less overhead
    assert rtx_count(s) == 0


def test_packets_respect_the_rtp_payload_limit():
    s = session(constant(4e6, 5_000), duration_s=5)
    s.run()
    media = [sz for sz, r in zip(s.size_bytes, s.pkt_rtp, strict=True) if r >= 0]
    assert max(media) <= MAX_RTP_PAYLOAD_BYTES + PACKET_OVERHEAD_BYTES


def test_feedback_every_interval_drives_one_decision():
    trace = constant(4e6, 10_000)
    for interval_ms in (50, 100, 200):
        s = Session(
            make_controller("fixed:1000"),
            LinkConfig(trace),
            SessionConfig(duration_s=10, feedback_interval_ms=interval_ms),
        )
        s.run()
        assert len(s.decisions) == pytest.approx(10_000 / interval_ms, abs=2)


def test_random_loss_is_recovered_by_nack():
    s = session(constant(4e6, 30_000), duration_s=30, loss=0.02, delay_ms=20)
    q = s.run().qoe
    assert q.loss_rate == pytest.approx(0.02, abs=0.006)
    assert rtx_count(s) >= 0.8 * q.loss_rate * len(s.send_us)
    assert q.stall_rate < 0.01
    assert q.frames_rendered >= 0.98 * q.frames_sent


def test_loss_rate_counts_link_drops():
    # 2.5 Mbps offered into 2 Mbps with a 20-packet queue: the link must drop.
    s = session(constant(2e6, 10_000), controller="fixed:2500", duration_s=10, queue_packets=20)
    q = s.run().qoe
    arr = np.asarray(s.arrival_us)
    # Packets still in flight at the end are left out of the QoE figure only.
    assert q.loss_rate == pytest.approx(float(np.mean(arr < 0)), abs=5e-3)
    assert q.loss_rate > 0.05


def test_unrecoverable_loss_asks_for_a_keyframe_and_recovers(monkeypatch):
    s = session(constant(4e6, 20_000), duration_s=20, loss=0.01)
    monkeypatch.setattr(s, "_on_nack", lambda seqs, now_us: None)  # the sender ignores NACKs
    q = s.run().qoe
    keyframes = [i for i, k in enumerate(s.frame_is_key) if k]
    assert len(keyframes) >= 2  # the first frame, then at least one on PLI
    # Rendering goes on after the requested keyframe.
    last_key_ms = s.frame_capture_us[keyframes[-1]] / 1000
    assert max(s.receiver.render_ms) > last_key_ms
    assert q.stall_rate > 0.0


def test_outage_freezes_the_video():
    trace = steps([(8_000, 3e6), (3_000, 0.0), (9_000, 3e6)])
    q = session(trace, controller="gcc", duration_s=20).run().qoe
    assert q.freezes >= 1
    assert 0.1 < q.stall_rate < 0.4


def test_same_seed_same_session_other_seed_other_session():
    trace = constant(3e6, 10_000)
    a = session(trace, controller="gcc", duration_s=10, seed=3, loss=0.03).run()
    b = session(trace, controller="gcc", duration_s=10, seed=3, loss=0.03).run()
    c = session(trace, controller="gcc", duration_s=10, seed=4, loss=0.03).run()
    assert a.qoe == b.qoe
    for k in a.timeline:
        assert np.array_equal(a.timeline[k], b.timeline[k], equal_nan=True)
    assert a.qoe != c.qoe


def test_trace_shorter_than_session_loops():
    trace = constant(3e6, 2_000)  # a 2 s trace, 10 s session
    q = session(trace, duration_s=10).run().qoe
    assert q.stall_rate == 0.0
    assert q.capacity_kbps == pytest.approx(3000 * 1504 / 1500, rel=0.01)


def test_bad_link_settings_are_refused():
    trace = constant(1e6, 1_000)
    with pytest.raises(ValueError):
        LinkConfig(trace, delay_ms=-1)
    with pytest.raises(ValueError):
        LinkConfig(trace, loss=1.0)
    with pytest.raises(ValueError):
        LinkConfig(trace, queue_packets=10, queue_bytes=1000)
    with pytest.raises(ValueError):
        SessionConfig(duration_s=0)


def test_feedback_blackout_drops_receiver_messages_for_its_window():
    trace = constant(3e6, 10_000)
    link = LinkConfig(trace, feedback_blackouts_ms=((4_000, 6_000),))
    s = Session(make_controller("gcc"), link, SessionConfig(10))
    s.run()
    times = [t for t, _ in s.decisions]
    assert not any(4.0 <= t < 6.0 for t in times)
    assert any(t >= 6.0 for t in times)
    assert s.feedback_blacked_out >= 19  # 20 reports of 100 ms, plus RR/NACK if any


def test_retransmissions_are_capped_at_the_target_rate():
    # 25 % loss at 1 Mbps: NACKs would ask for ~250 kbps of retransmissions, fine; an outage
    # with a full queue asks for far more, which the 1 s window at the target rate must cap.
    trace = steps([(5_000, 3e6), (3_000, 0.0), (7_000, 3e6)])
    s = session(trace, controller="fixed:1000", duration_s=15, queue_packets=60)
    s.run()
    send = np.asarray(s.send_us)
    rtx = np.asarray(s.pkt_rtx)
    size = np.asarray(s.size_bytes)
    for start in range(0, 15_000_000, 500_000):
        window = (send >= start) & (send < start + 1_000_000) & rtx
        assert size[window].sum() * 8 <= 1_000_000 * 1.01


def _run_both_send_paths(controller: str, trace, duration_s: float, **link):
    """The same session through the compiled send path and through Path.send (the path a
    subclass with Python stages in ``_uplink`` takes)."""
    sessions = []
    for generic in (False, True):
        s = session(trace, controller=controller, duration_s=duration_s, seed=5, **link)
        if generic:
            s.use_uplink(Path(list(s.uplink.stages)))  # same stages, not the standard object
        s.run()
        sessions.append(s)
    return sessions


def test_python_stage_path_sends_exactly_like_the_compiled_path():
    trace = steps([(6_000, 3e6), (4_000, 0.8e6), (6_000, 2.5e6)])
    for controller, link in (
        ("gcc", {"loss": 0.03, "queue_packets": 40, "delay_ms": 30}),
        ("fixed:2000", {"queue_bytes": 30_000}),
    ):
        fast, generic = _run_both_send_paths(controller, trace, 16.0, **link)
        assert fast.result().qoe == generic.result().qoe
        for name in ("send_us", "arrival_us", "size_bytes", "probe_id", "pkt_rtp", "pkt_rtx"):
            assert np.array_equal(getattr(fast, name), getattr(generic, name)), name
        assert fast.decisions == generic.decisions
        assert fast.receiver.render_ms == generic.receiver.render_ms
        assert rtx_count(fast) > 0 or link.get("loss", 0) == 0


def test_long_session_grows_its_tables_without_changing_a_packet():
    # Tables start at 4096 rows and double: a 2-minute session grows each of them; the first
    # minute must be packet for packet the 1-minute session.
    trace = constant(3e6, 60_000)
    short = session(trace, controller="gcc", duration_s=60.0, seed=2)
    long = session(trace, controller="gcc", duration_s=120.0, seed=2)
    short.run()
    long.run()
    n = int(np.searchsorted(long.send_us, 55_000_000))
    assert len(long.send_us) > 2 * 4096
    for name in ("send_us", "arrival_us", "size_bytes", "pkt_rtp"):
        assert np.array_equal(getattr(short, name)[:n], getattr(long, name)[:n]), name


def test_tables_and_rings_that_start_tiny_give_the_same_session(monkeypatch):
    # With 8-row tables and 2-slot pacer rings every table and ring grows many times (a frame's
    # room is checked by the compiled send path, a packet's history row per packet), through
    # both send paths: no packet, decision or rendered frame may change.
    import loki.emu.pacer as pacer_module
    import loki.emu.session as session_module

    trace = steps([(6_000, 3e6), (4_000, 0.8e6), (6_000, 2.5e6)])
    link = {"loss": 0.03, "queue_packets": 40}
    reference = _run_both_send_paths("gcc", trace, 16.0, **link)
    monkeypatch.setattr(session_module, "_INITIAL_ROWS", 8)
    monkeypatch.setattr(pacer_module, "_INITIAL_RING", 2)
    tiny = _run_both_send_paths("gcc", trace, 16.0, **link)
    assert tiny[0].pacer.generation > 0
    for ref, small in zip(reference, tiny, strict=True):
        assert ref.result().qoe == small.result().qoe
        for name in ("send_us", "arrival_us", "size_bytes", "pkt_rtp", "frame_bytes"):
            assert np.array_equal(getattr(ref, name), getattr(small, name)), name
        assert ref.decisions == small.decisions
        assert ref.receiver.render_ms == small.receiver.render_ms
