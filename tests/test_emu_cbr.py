"""The emulator against the four rows measured on real mahimahi (docs/mahimahi-link.md):
constant 12 Mbps trace ``seq 1 1000``, ``mm-delay 20``, 1472-byte UDP payloads (1500-byte IP).

Goodput, loss and the 16 Mbps backlog must match within 0.5 %. Delays are compared by structure:
the emulator works in whole ms and releases a packet exactly at its ms, while mahimahi's event
loop wakes up to about a millisecond after the ms boundary in each of mm-link and mm-delay (poll
timeouts are computed from a floored ms clock) plus OS scheduling noise. So with nothing queued
the emulated one-way delay is ``21 - send phase`` in ``(20, 21]`` ms, and the measured p50 sits
0.9 to 1.3 ms higher and the max a few ms higher; the tests pin that down rather than hide it.
With ``host=MahimahiHostTiming()`` the emulator replays mahimahi's two event loops on its result
(loki.emu.host_timing), and the measured medians and minimum are reproduced (the last tests).
"""

from __future__ import annotations

import numpy as np
import pytest

from loki.emu import (
    DEFAULT_PAYLOAD_BYTES,
    DROPPED,
    CbrLog,
    DropTail,
    cbr_send_times_us,
    run_cbr,
    uplink_path,
)
from loki.emu.host_timing import MahimahiHostTiming
from traces.trace import Trace

CONST_12MBPS = Trace("seq 1 1000", np.arange(1, 1001, dtype=np.int64))
DELAY_MS = 20
#: UDP payload ceiling of the 12 Mbps trace: 1472 payload bytes per 1 ms opportunity.
PAYLOAD_CEILING_BPS = DEFAULT_PAYLOAD_BYTES * 8 * 1000
REL_TOL = 0.005
#: Most the measured p50 one-way delay may exceed the emulated one: host wake-up latency.
HOST_LATENCY_P50_MS = 1.5


def whole_ms_delay(log: CbrLog) -> np.ndarray:
    ok = log.delivered
    return log.arrival_ms[ok] - log.send_us[ok] // 1000


def test_8mbps_infinite_queue() -> None:
    log = run_cbr(uplink_path(CONST_12MBPS, DELAY_MS), 8_000_000, duration_ms=10_000)
    assert log.goodput_bps() == pytest.approx(8.000e6, rel=REL_TOL)
    assert log.loss_fraction() == 0.0
    # Nothing queues at 8 of 11.776 Mbps: 1 ms in the link (the next opportunity) + 20 ms.
    assert np.all(whole_ms_delay(log) == DELAY_MS + 1)
    delay_ms = log.one_way_delay_ms()
    assert 20.0 < delay_ms.min() < 20.18  # measured min 20.18
    assert delay_ms.max() == 21.0  # measured max 25.0: OS scheduling noise not emulated
    p50_ms = float(np.median(delay_ms))
    assert 20.4 < p50_ms < 20.6  # uniform send phase
    assert 0 < 21.4 - p50_ms < HOST_LATENCY_P50_MS  # measured p50 21.4


def test_11mbps_infinite_queue() -> None:
    log = run_cbr(uplink_path(CONST_12MBPS, DELAY_MS), 11_000_000, duration_ms=10_000)
    assert log.goodput_bps() == pytest.approx(10.999e6, rel=REL_TOL)
    assert log.loss_fraction() == 0.0
    # Packets 1.07 ms apart never share an opportunity: still exactly 1 ms in the link.
    assert np.all(whole_ms_delay(log) == DELAY_MS + 1)
    p50_ms = float(np.median(log.one_way_delay_ms()))
    assert 0 < 21.5 - p50_ms < HOST_LATENCY_P50_MS  # measured p50 about 21.5


def test_16mbps_for_4s_infinite_queue_grows_linearly() -> None:
    log = run_cbr(uplink_path(CONST_12MBPS, DELAY_MS), 16_000_000, duration_ms=4_000)
    assert log.goodput_bps() == pytest.approx(11.773e6, rel=REL_TOL)
    assert log.goodput_bps() <= PAYLOAD_CEILING_BPS
    assert log.loss_fraction() == 0.0
    delay_ms = log.one_way_delay_ms()
    send_ms = log.send_us / 1000
    # The backlog grows at offered/served - 1 ms per ms of sending, in a straight line.
    slope, intercept = np.polyfit(send_ms, delay_ms, 1)
    assert slope == pytest.approx(16e6 / PAYLOAD_CEILING_BPS - 1, rel=REL_TOL)
    assert np.max(np.abs(delay_ms - (slope * send_ms + intercept))) < 1.0
    assert delay_ms[-1] == pytest.approx(1457.0, rel=REL_TOL)  # measured 1457, predicted 1456


def test_16mbps_droptail_100_packets() -> None:
    path = uplink_path(CONST_12MBPS, DELAY_MS, queue=DropTail(limit_packets=100))
    log = run_cbr(path, 16_000_000, duration_ms=4_000)
    assert log.goodput_bps() == pytest.approx(11.775e6, rel=REL_TOL)
    assert log.loss_fraction() == pytest.approx(0.246, rel=REL_TOL)
    # Once full (after ~280 ms), 100 packets wait ahead of each one accepted: it leaves 100 ms
    # after its arrival ms (the one in transit is not counted), then mm-delay's 20 ms.
    full = log.send_us[log.delivered] > 400_000
    assert np.all(whole_ms_delay(log)[full] == 100 + DELAY_MS)
    delay_ms = log.one_way_delay_ms()
    assert delay_ms.max() == 120.0  # measured max 124.5: OS scheduling noise not emulated
    assert 0 < 120.9 - float(np.median(delay_ms)) < HOST_LATENCY_P50_MS  # measured p50 120.9


def test_send_times_are_exact_us_and_rate_counts_payload_bits() -> None:
    # 8 Mbps of 1472-byte payloads: one packet every 1472 us.
    assert cbr_send_times_us(8_000_000, 1472, 10).tolist() == [1472 * i for i in range(7)]
    # 16 Mbps for 4 s of payload is 5434.8 packets: 5435 start before 4 s.
    send_us = cbr_send_times_us(16_000_000, 1472, 4_000)
    assert send_us.size == 5435 and send_us[-1] < 4_000_000
    # Non-integer interval: 11 Mbps -> 1070.545... us, floored per packet, no drift.
    send_us = cbr_send_times_us(11_000_000, 1472, 10_000)
    assert send_us[11] == 11 * 1472 * 8_000_000 // 11_000_000
    assert send_us[-1] == (send_us.size - 1) * 1472 * 8_000_000 // 11_000_000
    with pytest.raises(ValueError):
        cbr_send_times_us(0, 1472, 10)


def test_csv_log_round_trips_with_empty_arrival_for_lost(tmp_path) -> None:
    path = uplink_path(CONST_12MBPS, DELAY_MS, queue=DropTail(limit_packets=5))
    log = run_cbr(path, 16_000_000, duration_ms=200, payload_bytes=1000)
    assert np.any(log.arrival_ms == DROPPED)
    out = tmp_path / "cbr.csv"
    log.write_csv(out)
    lines = out.read_text().splitlines()
    assert lines[0] == "send_ms,arrival_ms,size_bytes"
    assert lines[1] == "0.000,21,1028"
    # 1000-byte payloads at 16 Mbps leave 500 us apart; two 1032-byte charges overflow one
    # opportunity, so the second finishes in the next one.
    assert lines[2] == "0.500,22,1028"
    lost_row = 1 + int(np.flatnonzero(log.arrival_ms == DROPPED)[0])
    assert lines[lost_row].split(",")[1] == ""
    back = CbrLog.read_csv(out)
    for name in ("send_us", "arrival_ms", "size_bytes"):
        assert np.array_equal(getattr(back, name), getattr(log, name))


# --- mahimahi's host timing (loki.emu.host_timing): the event loops replayed -----------------

HOST = MahimahiHostTiming()


def host_log(rate_bps: int, duration_ms: int, queue: DropTail | None = None) -> CbrLog:
    return run_cbr(
        uplink_path(CONST_12MBPS, DELAY_MS, queue=queue), rate_bps, duration_ms, host=HOST
    )


def test_host_timing_8mbps_matches_the_measured_min_and_median() -> None:
    log = host_log(8_000_000, 10_000)
    delay_ms = log.one_way_delay_ms()
    # Whole-ms emulation: p50 20.5 (-4.2 %), min 20.0+. The loops' wake-ups add the rest.
    assert float(np.median(delay_ms)) == pytest.approx(21.4, rel=REL_TOL)
    assert float(delay_ms.min()) == pytest.approx(20.18, rel=REL_TOL)
    # The measured max (25.0 ms) is OS scheduling noise, which is not modelled.
    assert delay_ms.max() < 22.0
    assert log.goodput_bps() == pytest.approx(8.000e6, rel=REL_TOL)
    assert log.loss_fraction() == 0.0


def test_host_timing_11mbps_matches_the_measured_median() -> None:
    log = host_log(11_000_000, 10_000)
    assert float(np.median(log.one_way_delay_ms())) == pytest.approx(21.5, rel=REL_TOL)
    assert log.goodput_bps() == pytest.approx(10.999e6, rel=REL_TOL)


def test_host_timing_16mbps_backlog_and_droptail() -> None:
    log = host_log(16_000_000, 4_000)
    assert log.one_way_delay_ms()[-1] == pytest.approx(1457.0, rel=REL_TOL)
    assert log.goodput_bps() == pytest.approx(11.773e6, rel=REL_TOL)
    log = host_log(16_000_000, 4_000, DropTail(limit_packets=100))
    assert log.loss_fraction() == pytest.approx(0.246, rel=REL_TOL)
    full = log.send_us[log.delivered] > 400_000
    p50_ms = float(np.median(log.one_way_delay_ms()[full]))
    # Measured 120.9. The kernel's IPv6 packets on the new interface (host.chatter) shift
    # the full queue's byte alignment, so one packet is always part-sent and the queue holds
    # 101: 120.82 ms. Without them the loops alone give 120.09 (-0.67 %).
    assert p50_ms == pytest.approx(120.9, rel=REL_TOL)
    bare = run_cbr(
        uplink_path(CONST_12MBPS, DELAY_MS, queue=DropTail(limit_packets=100)),
        16_000_000,
        4_000,
        host=MahimahiHostTiming(chatter=()),
    )
    full = bare.send_us[bare.delivered] > 400_000
    assert float(np.median(bare.one_way_delay_ms()[full])) == pytest.approx(p50_ms - 0.73, abs=0.1)


def test_host_timing_keeps_the_link_result_and_is_deterministic() -> None:
    whole = run_cbr(uplink_path(CONST_12MBPS, DELAY_MS), 8_000_000, 2_000)
    log = host_log(8_000_000, 2_000)
    again = host_log(8_000_000, 2_000)
    assert np.array_equal(log.arrival_us, again.arrival_us)
    ok = log.delivered
    assert np.array_equal(ok, whole.delivered)
    assert np.array_equal(log.arrival_ms[ok], log.arrival_us[ok] // 1000)
    # Never earlier than the ms mahimahi's rules make it due; the loops only add lateness
    # (below 2 ms here: a timer's phase, the slack, three hops).
    late_us = log.arrival_us[ok] - whole.arrival_ms[ok] * 1000
    assert late_us.min() >= 0 and late_us.max() < 2_000


def test_host_timing_log_round_trips_to_the_us(tmp_path) -> None:
    log = run_cbr(
        uplink_path(CONST_12MBPS, DELAY_MS, queue=DropTail(limit_packets=5)),
        16_000_000,
        200,
        payload_bytes=1000,
        host=HOST,
    )
    assert np.any(~log.delivered)
    out = tmp_path / "cbr.csv"
    log.write_csv(out)
    back = CbrLog.read_csv(out)
    for name in ("send_us", "arrival_ms", "size_bytes", "arrival_us"):
        assert np.array_equal(getattr(back, name), getattr(log, name))
    assert np.allclose(back.one_way_delay_ms(), log.one_way_delay_ms())


def test_host_timing_needs_an_uplink_path() -> None:
    from loki.emu.delay import Delay

    with pytest.raises(ValueError, match="host timing needs"):
        run_cbr(Delay(20), 1_000_000, 100, host=HOST)
    with pytest.raises(ValueError):
        MahimahiHostTiming(hop_us=-1)
    with pytest.raises(ValueError, match="chatter"):
        MahimahiHostTiming(chatter=((0, 2000),))
    with pytest.raises(ValueError, match="chatter"):
        MahimahiHostTiming(chatter=((-1, 76),))
