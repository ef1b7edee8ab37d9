"""The receive-side policies shared by the emulated and the live receiver (loki.receive)."""

import pytest

from loki.receive import KeyframeRequester, NackRequester, PlayoutTiming
from loki.receive.keyframe_request import KEYFRAME_WAIT_US, MAX_WAIT_FOR_FRAME_US
from loki.receive.nack_requester import MAX_NACK_RETRIES
from loki.receive.timing import NACK_LIMIT, OS_JITTER_US

FRAME_US = 33_333


# -- NackRequester -----------------------------------------------------------------------------
def test_gap_is_nacked_at_once_and_recovery_removes_it():
    n = NackRequester()
    out: list[int] = []
    assert n.on_packet(0, 0, out) and n.on_packet(1, 1000, out)
    assert n.on_packet(4, 2000, out)
    assert out == [2, 3]
    assert n.on_packet(3, 50_000, []) is True  # a retransmission fills the gap
    assert n.on_packet(3, 60_000, []) is False  # a duplicate
    assert len(n) == 1


def test_retries_once_per_rtt_then_gives_up():
    n = NackRequester()
    n.rtt_us = 50_000
    n.on_packet(0, 0, [])
    n.on_packet(2, 0, [])
    due, gave_up = n.retries_due(40_000)
    assert due == [] and not gave_up  # not an RTT yet
    t = 0
    for _ in range(MAX_NACK_RETRIES):
        t += 50_000
        due, gave_up = n.retries_due(t)
        assert due == [1] and not gave_up
    due, gave_up = n.retries_due(t + 50_000)
    assert due == [] and gave_up
    assert len(n) == 0


def test_keyframe_clears_older_missing_packets():
    n = NackRequester()
    n.on_packet(0, 0, [])
    n.on_packet(10, 0, [])
    n.clear_up_to(5)
    assert len(n) == 5


# -- PlayoutTiming -----------------------------------------------------------------------------
def test_smooth_stream_renders_at_decode_plus_os_jitter():
    t = PlayoutTiming()
    for i in range(60):
        cap = i * FRAME_US
        r = t.render_time_us(cap, cap + 40_000, False, 100_000)
    assert r - (cap + 40_000) == pytest.approx(OS_JITTER_US, abs=100)


def test_rtt_joins_the_delay_after_three_retransmitted_frames():
    t = PlayoutTiming()
    rtt = 200_000
    cap = 0
    for i in range(30):
        cap = i * FRAME_US
        t.render_time_us(cap, cap + 40_000, False, rtt)
    assert t.current_delay_us < 20_000
    for _ in range(NACK_LIMIT):
        cap += FRAME_US
        t.render_time_us(cap, cap + 40_000 + rtt, True, rtt)
    assert t.current_delay_us >= rtt
    # A later retransmitted frame now fits in the buffer: its render time is on schedule.
    cap += FRAME_US
    on_time = t.render_time_us(cap, cap + 40_000, False, rtt)
    cap += FRAME_US
    late = t.render_time_us(cap, cap + 40_000 + rtt - 20_000, True, rtt)
    assert late - on_time == pytest.approx(FRAME_US, abs=1_000)


def test_render_times_never_go_backwards():
    t = PlayoutTiming()
    r1 = t.render_time_us(0, 500_000, False, 0)
    r2 = t.render_time_us(FRAME_US, 100_000, False, 0)
    assert r2 >= r1


# -- KeyframeRequester -------------------------------------------------------------------------
def test_no_request_while_frames_decode():
    k = KeyframeRequester()
    for i in range(200):
        k.on_frame_waiting()
        k.on_decoded(i * FRAME_US, False, False)
        assert not k.should_request(i * FRAME_US)


def test_request_after_three_seconds_stuck_then_every_wait():
    k = KeyframeRequester()
    k.on_decoded(0, True, False)
    k.on_frame_waiting()
    assert not k.should_request(MAX_WAIT_FOR_FRAME_US - 1)
    assert k.should_request(MAX_WAIT_FOR_FRAME_US)
    assert not k.should_request(MAX_WAIT_FOR_FRAME_US + KEYFRAME_WAIT_US - 1)
    assert k.should_request(MAX_WAIT_FOR_FRAME_US + KEYFRAME_WAIT_US)
    k.on_decoded(4_000_000, True, False)
    assert not k.should_request(5_000_000)


def test_nack_give_up_requests_at_once_but_not_while_a_keyframe_arrives():
    k = KeyframeRequester()
    k.on_keyframe_packet(1_000_000)
    assert not k.should_request(1_100_000, nack_gave_up=True)
    assert k.should_request(1_000_000 + KEYFRAME_WAIT_US)
    assert k.requests == 1


def test_nack_list_grows_for_a_long_gap_and_keeps_sequence_order():
    n = NackRequester()
    n.rtt_us = 10_000
    out: list[int] = []
    n.on_packet(0, 0, out)
    n.on_packet(101, 0, out)  # 100 missing: more than the table starts with
    assert out == list(range(1, 101)) and len(n) == 100
    for s in (50, 7, 99, 1):  # recovered out of order
        assert n.on_packet(s, 1_000, []) is True
        assert n.on_packet(s, 1_000, []) is False
    n.clear_up_to(10)  # a keyframe starting at 10 decoded
    due, gave_up = n.retries_due(20_000)
    assert due == [s for s in range(10, 101) if s not in (50, 99)] and not gave_up
