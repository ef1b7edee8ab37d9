"""Port of libwebrtc's ``probe_controller_unittest.cc`` (upstream, mid-2024).

Same fixture: min 100 bps, start 300 bps, max 10 000 bps, clock starting at 100 s. Field-trial
strings become :class:`ProbeControllerConfig` fields. The tests that need a
``NetworkStateEstimate`` are not ported (that probing mode is left out; see the module).
"""

from __future__ import annotations

import pytest

from gcc.probe_controller import BandwidthLimitedCause, ProbeController, ProbeControllerConfig
from loki.api import ProbeCluster

MIN_BITRATE = 100
START_BITRATE = 300
MAX_BITRATE = 10_000
EXPONENTIAL_PROBING_TIMEOUT_US = 5_000_000
ALR_PROBE_INTERVAL_US = 5_000_000
ALR_ENDED_TIMEOUT_US = 3_000_000
BITRATE_DROP_TIMEOUT_US = 5_000_000
MBPS = 1_000_000

DELAY_BASED = BandwidthLimitedCause.DELAY_BASED_LIMITED
LOSS_INCREASING = BandwidthLimitedCause.LOSS_LIMITED_BWE_INCREASING
LOSS_LIMITED = BandwidthLimitedCause.LOSS_LIMITED_BWE


class Fixture:
    def __init__(self, config: ProbeControllerConfig | None = None) -> None:
        self.now_us = 100_000_000
        self.pc = ProbeController(config)

    def advance(self, delta_us: int) -> None:
        self.now_us += delta_us

    def network_up(self) -> list[ProbeCluster]:
        return self.pc.on_network_availability(True, self.now_us)

    def set_bitrates(self, min_bps=MIN_BITRATE, start_bps=START_BITRATE, max_bps=MAX_BITRATE):
        return self.pc.set_bitrates(min_bps, start_bps, max_bps, self.now_us)

    def set_estimate(self, bps: int, cause: BandwidthLimitedCause = DELAY_BASED):
        return self.pc.set_estimated_bitrate(bps, cause, self.now_us)

    def process(self) -> list[ProbeCluster]:
        return self.pc.process(self.now_us)

    def allocated(self, bps: int) -> list[ProbeCluster]:
        return self.pc.on_max_total_allocated_bitrate(bps, self.now_us)

    def alr_start_now(self) -> None:
        self.pc.set_alr_start_time(self.now_us)


@pytest.fixture
def f() -> Fixture:
    fx = Fixture()
    assert fx.network_up() == []
    return fx


def rates(probes: list[ProbeCluster]) -> list[int]:
    return [p.target_bps for p in probes]


def test_initiates_probing_after_set_bitrates(f: Fixture) -> None:
    assert len(f.set_bitrates()) >= 2


def test_initiates_probing_when_network_available() -> None:
    fx = Fixture()
    assert fx.set_bitrates() == []
    assert len(fx.network_up()) >= 2


def test_sets_default_target_duration_and_target_probe_count(f: Fixture) -> None:
    probes = f.set_bitrates()
    assert len(probes) >= 2
    assert probes[0].duration_us == 15_000
    assert probes[0].min_probes == 5


def test_field_trials_override_default_target_duration_and_target_probe_count() -> None:
    fx = Fixture(ProbeControllerConfig(min_probe_packets_sent=2, min_probe_duration_us=123_000))
    assert fx.network_up() == []
    probes = fx.set_bitrates()
    assert len(probes) >= 2
    assert probes[0].duration_us == 123_000
    assert probes[0].min_probes == 2


def test_probe_only_when_network_is_up() -> None:
    fx = Fixture()
    fx.pc.on_network_availability(False, fx.now_us)
    assert fx.set_bitrates() == []
    assert len(fx.network_up()) >= 2


def test_can_configure_initial_probe_rate_factor() -> None:
    fx = Fixture(
        ProbeControllerConfig(first_exponential_probe_scale=2, second_exponential_probe_scale=3)
    )
    fx.network_up()
    assert rates(fx.set_bitrates()) == [START_BITRATE * 2, START_BITRATE * 3]


def test_disable_second_initial_probe_if_rate_factor_zero() -> None:
    fx = Fixture(
        ProbeControllerConfig(first_exponential_probe_scale=2, second_exponential_probe_scale=0)
    )
    fx.network_up()
    assert rates(fx.set_bitrates()) == [START_BITRATE * 2]


def test_initiates_probing_on_max_bitrate_increase(f: Fixture) -> None:
    f.set_bitrates()
    f.advance(EXPONENTIAL_PROBING_TIMEOUT_US)  # Long enough to time out exponential probing.
    f.set_estimate(START_BITRATE)
    f.process()
    probes = f.set_bitrates(max_bps=MAX_BITRATE + 100)
    assert rates(probes) == [MAX_BITRATE + 100]


def test_probes_on_max_allocated_bitrate_increase_only_when_in_alr(f: Fixture) -> None:
    f.set_bitrates()
    f.set_estimate(MAX_BITRATE - 1)
    f.advance(EXPONENTIAL_PROBING_TIMEOUT_US)
    assert f.process() == []
    # Probe when in ALR.
    f.alr_start_now()
    probes = f.allocated(MAX_BITRATE + 1)
    assert len(probes) == 2
    assert probes[0].target_bps == MAX_BITRATE
    # Do not probe when not in ALR.
    f.pc.set_alr_start_time(None)
    assert f.allocated(MAX_BITRATE + 2) == []


def test_probes_on_max_allocated_bitrate_limited_by_current_bwe() -> None:
    fx = Fixture(ProbeControllerConfig(allocation_probe_limit_by_current_scale=1.5))
    assert MAX_BITRATE > 1.5 * START_BITRATE
    fx.network_up()
    fx.set_bitrates()
    fx.set_estimate(START_BITRATE)
    fx.advance(EXPONENTIAL_PROBING_TIMEOUT_US)
    assert fx.process() == []
    # Probe when in ALR.
    fx.alr_start_now()
    probes = fx.allocated(MAX_BITRATE)
    assert rates(probes) == [1.5 * START_BITRATE]
    # Continue probing if the probe succeeds.
    probes = fx.set_estimate(int(1.5 * START_BITRATE))
    assert len(probes) == 1
    assert probes[0].target_bps > 1.5 * START_BITRATE


def test_can_disable_probing_on_max_total_allocated_bitrate_increase() -> None:
    fx = Fixture(ProbeControllerConfig(probe_on_max_allocated_bitrate_change=False))
    fx.network_up()
    fx.set_bitrates()
    fx.set_estimate(MAX_BITRATE - 1)
    fx.advance(EXPONENTIAL_PROBING_TIMEOUT_US)
    assert fx.process() == []
    fx.alr_start_now()
    # No probe, since probe_max_allocation is false.
    fx.alr_start_now()
    assert fx.allocated(MAX_BITRATE + 1) == []


def test_initiates_probing_on_max_bitrate_increase_at_max_bitrate(f: Fixture) -> None:
    f.set_bitrates()
    f.advance(EXPONENTIAL_PROBING_TIMEOUT_US)
    f.set_estimate(START_BITRATE)
    f.process()
    f.set_estimate(MAX_BITRATE)
    probes = f.set_bitrates(max_bps=MAX_BITRATE + 100)
    assert rates(probes) == [MAX_BITRATE + 100]


def test_exponential_probing(f: Fixture) -> None:
    f.set_bitrates()
    # A repeated probe is only sent when the estimate climbs above 0.7 * 6 * 300 = 1260.
    assert f.set_estimate(1000) == []
    probes = f.set_estimate(1800)
    assert rates(probes) == [2 * 1800]


def test_exponential_probing_stop_if_max_bitrate_low() -> None:
    fx = Fixture(ProbeControllerConfig(abort_further_probe_if_max_lower_than_current=True))
    fx.network_up()
    assert len(fx.set_bitrates()) > 0
    # Normally 1800 > 1260 would probe further, but the max is now low.
    assert fx.set_bitrates(max_bps=START_BITRATE) == []
    assert fx.set_estimate(1800) == []


def test_exponential_probing_stop_if_max_allocated_bitrate_low() -> None:
    fx = Fixture(ProbeControllerConfig(abort_further_probe_if_max_lower_than_current=True))
    fx.network_up()
    assert len(fx.set_bitrates()) > 0
    # Normally 1800 > 1260 would probe further, but the allocation is low.
    assert fx.allocated(START_BITRATE) == []
    assert fx.set_estimate(1800) == []


def test_initial_probing_to_low_max_allocated_bitrate(f: Fixture) -> None:
    assert len(f.set_bitrates()) > 0
    assert f.allocated(START_BITRATE) == []
    # On the initial probe result, a new probe is sent at 2x the needed max bitrate.
    probes = f.set_estimate(1800)
    assert rates(probes) == [2 * START_BITRATE]


def test_initial_probing_timeout(f: Fixture) -> None:
    assert len(f.set_bitrates()) > 0
    # Advance far enough to time out waiting for a probing result.
    f.advance(EXPONENTIAL_PROBING_TIMEOUT_US)
    assert f.process() == []
    assert f.set_estimate(1800) == []


def test_repeated_initial_probing_sends_new_probe_after_timeout(f: Fixture) -> None:
    f.pc.enable_repeated_initial_probing(True)
    assert len(f.set_bitrates()) > 0
    start_us = last_probe_us = f.now_us
    while f.now_us < start_us + 5_000_000:
        f.advance(100_000)
        probes = f.process()
        if probes:
            # Expect a probe every 1.1 s (1 s waiting for a result, then the next tick).
            assert f.now_us - last_probe_us == 1_100_000
            assert f.pc.last_min_probe_delta_us == 20_000
            assert probes[0].duration_us == 100_000
            last_probe_us = f.now_us
        else:
            assert f.now_us - last_probe_us < 1_100_000
    f.advance(1_000_000)
    # After 5 s, repeated initial probing stops.
    assert f.process() == []


def test_repeated_initial_probing_stop_if_max_allocated_bitrate_set(f: Fixture) -> None:
    f.pc.enable_repeated_initial_probing(True)
    assert len(f.set_bitrates()) > 0
    f.advance(1_100_000)
    assert len(f.process()) == 1
    f.allocated(MIN_BITRATE)
    f.advance(1_100_000)
    assert f.process() == []


def test_request_probe_in_alr(f: Fixture) -> None:
    assert len(f.set_bitrates()) >= 2
    f.set_estimate(500)
    f.alr_start_now()
    f.advance(ALR_PROBE_INTERVAL_US + 1_000)
    f.process()
    f.set_estimate(250)
    probes = f.pc.request_probe(f.now_us)
    assert rates(probes) == [0.85 * 500]


def test_request_probe_when_alr_ended_recently(f: Fixture) -> None:
    assert len(f.set_bitrates()) == 2
    f.set_estimate(500)
    f.pc.set_alr_start_time(None)
    f.advance(ALR_PROBE_INTERVAL_US + 1_000)
    f.process()
    f.set_estimate(250)
    f.pc.set_alr_ended_time(f.now_us)
    f.advance(ALR_ENDED_TIMEOUT_US - 1_000)
    probes = f.pc.request_probe(f.now_us)
    assert rates(probes) == [0.85 * 500]


def test_request_probe_when_alr_not_ended_recently(f: Fixture) -> None:
    assert len(f.set_bitrates()) == 2
    f.set_estimate(500)
    f.pc.set_alr_start_time(None)
    f.advance(ALR_PROBE_INTERVAL_US + 1_000)
    f.process()
    f.set_estimate(250)
    f.pc.set_alr_ended_time(f.now_us)
    f.advance(ALR_ENDED_TIMEOUT_US + 1_000)
    assert f.pc.request_probe(f.now_us) == []


def test_request_probe_when_bwe_drop_not_recent(f: Fixture) -> None:
    assert len(f.set_bitrates()) == 2
    f.set_estimate(500)
    f.alr_start_now()
    f.advance(ALR_PROBE_INTERVAL_US + 1_000)
    f.process()
    f.set_estimate(250)
    f.advance(BITRATE_DROP_TIMEOUT_US + 1_000)
    assert f.pc.request_probe(f.now_us) == []


def test_periodic_probing(f: Fixture) -> None:
    f.pc.enable_periodic_alr_probing(True)
    assert len(f.set_bitrates()) == 2
    f.set_estimate(500)
    start_us = f.now_us

    # Expect a new probe after 5 s.
    f.pc.set_alr_start_time(start_us)
    f.advance(5_000_000)
    assert rates(f.process()) == [1000]
    f.set_estimate(500)

    # The next probe is due 10 s into ALR.
    f.pc.set_alr_start_time(start_us)
    f.advance(4_000_000)
    f.process()
    assert f.set_estimate(500) == []

    f.pc.set_alr_start_time(start_us)
    f.advance(1_000_000)
    assert len(f.process()) == 1
    assert f.set_estimate(500) == []


def test_periodic_probing_after_reset(f: Fixture) -> None:
    f.pc.set_alr_start_time(f.now_us)
    f.pc.enable_periodic_alr_probing(True)
    f.set_bitrates()
    f.pc.reset(f.now_us)

    f.advance(10_000_000)
    # Bitrates are not set yet, so no probe, even in ALR.
    assert f.process() == []
    assert len(f.set_bitrates()) == 2

    # The start bitrate is the estimate until set_estimated_bitrate is called.
    f.advance(10_000_000)
    assert rates(f.process()) == [START_BITRATE * 2]


def test_no_probes_when_transport_is_not_writable() -> None:
    fx = Fixture()
    fx.pc.enable_periodic_alr_probing(True)
    assert fx.pc.on_network_availability(False, fx.now_us) == []
    assert fx.set_bitrates() == []
    fx.advance(10_000_000)
    assert fx.process() == []

    # Reset after a route change: still no probe while the transport is not writable, even
    # though the bitrate constraints change.
    fx.pc.reset(fx.now_us)
    assert fx.set_bitrates(2 * MIN_BITRATE, 2 * START_BITRATE, 2 * MAX_BITRATE) == []
    fx.advance(10_000_000)
    assert fx.process() == []


def test_exponential_probing_overflow(f: Fixture) -> None:
    f.set_bitrates(MIN_BITRATE, 10 * MBPS, 100 * MBPS)
    # The probe rate is capped at the max bitrate.
    assert rates(f.set_estimate(60 * MBPS)) == [100 * MBPS]
    # No repeated probes.
    assert f.set_estimate(100 * MBPS) == []


def test_allocated_bitrate_cap(f: Fixture) -> None:
    max_bitrate = 100 * MBPS
    f.set_bitrates(MIN_BITRATE, 10 * MBPS, max_bitrate)
    # ALR for periodic probing.
    f.pc.enable_periodic_alr_probing(True)
    f.alr_start_now()
    estimated = max_bitrate // 10
    f.set_estimate(estimated)

    # A max allocated bitrate below the current estimate: no probe.
    max_allocated = estimated - 1 * MBPS
    assert f.allocated(max_allocated) == []

    # Probes such as ALR are capped at 2x the max allocation.
    f.advance(5_000_000)
    assert rates(f.process()) == [2 * max_allocated]

    # Remove the allocation limit.
    assert f.allocated(0) == []
    f.advance(5_000_000)
    assert rates(f.process()) == [estimated * 2]


def test_configurable_probing_field_trial() -> None:
    fx = Fixture(
        ProbeControllerConfig(
            first_exponential_probe_scale=2,
            second_exponential_probe_scale=5,
            further_exponential_probe_scale=3,
            further_probe_threshold=0.8,
            first_allocation_probe_scale=2,
            second_allocation_probe_scale=None,
            min_probe_packets_sent=2,
        )
    )
    fx.network_up()
    probes = fx.set_bitrates(MIN_BITRATE, START_BITRATE, 5_000_000)
    assert [(p.target_bps, p.min_probes) for p in probes] == [(600, 2), (1500, 2)]

    # A repeated probe is only sent when the estimate climbs above 0.8 * 5 * 300 = 1200.
    assert fx.set_estimate(1100) == []
    assert rates(fx.set_estimate(1250)) == [3 * 1250]

    fx.advance(5_000_000)
    fx.process()
    fx.alr_start_now()
    assert rates(fx.allocated(200_000)) == [400_000]


def test_limit_alr_probe_when_loss_based_bwe_limited(f: Fixture) -> None:
    f.pc.enable_periodic_alr_probing(True)
    f.set_bitrates()
    f.set_estimate(500)
    # Expect a new probe after 5 s.
    f.alr_start_now()
    f.advance(5_000_000)
    assert len(f.process()) == 1

    f.set_estimate(500, LOSS_INCREASING)
    f.advance(6_000_000)
    assert rates(f.process()) == [1.5 * 500]

    f.set_estimate(int(1.5 * 500))
    f.advance(6_000_000)
    probes = f.process()
    assert probes
    assert probes[0].target_bps > 1.5 * 1.5 * 500


def test_probe_in_alr_if_loss_based_increasing(f: Fixture) -> None:
    f.set_bitrates()
    f.pc.enable_periodic_alr_probing(True)
    f.set_estimate(START_BITRATE, LOSS_INCREASING)
    f.advance(EXPONENTIAL_PROBING_TIMEOUT_US)
    assert f.process() == []
    # Probe when in ALR.
    f.alr_start_now()
    f.advance(ALR_PROBE_INTERVAL_US + 1_000)
    assert rates(f.process()) == [1.5 * START_BITRATE]


def test_not_probe_when_in_alr_if_loss_based_decreases(f: Fixture) -> None:
    f.set_bitrates()
    f.pc.enable_periodic_alr_probing(True)
    f.set_estimate(START_BITRATE, LOSS_LIMITED)
    f.advance(EXPONENTIAL_PROBING_TIMEOUT_US)
    assert f.process() == []
    # No ALR probe while the loss-based estimate decreases.
    f.alr_start_now()
    f.advance(ALR_PROBE_INTERVAL_US + 1_000)
    assert f.process() == []


def test_not_probe_if_loss_based_increasing_outside_alr(f: Fixture) -> None:
    f.set_bitrates()
    f.pc.enable_periodic_alr_probing(True)
    f.set_estimate(START_BITRATE, LOSS_INCREASING)
    f.advance(EXPONENTIAL_PROBING_TIMEOUT_US)
    assert f.process() == []
    f.pc.set_alr_start_time(None)
    f.advance(ALR_PROBE_INTERVAL_US + 1_000)
    assert f.process() == []


def test_max_allocated_bitrate_not_reset(f: Fixture) -> None:
    assert f.set_bitrates()
    f.allocated(START_BITRATE // 4)
    f.pc.reset(f.now_us)
    probes = f.set_bitrates()
    assert probes
    assert probes[0].target_bps == START_BITRATE // 4 * 2


def test_skip_alr_probe_if_estimate_larger_than_max_probe() -> None:
    fx = Fixture(ProbeControllerConfig(skip_if_estimate_larger_than_fraction_of_max=0.9))
    fx.network_up()
    fx.pc.enable_periodic_alr_probing(True)
    assert fx.set_bitrates()
    assert fx.set_estimate(MAX_BITRATE) == []

    fx.alr_start_now()
    fx.advance(10_000_000)
    assert fx.process() == []

    # But if the max rate increases, a new probe is sent.
    assert fx.set_bitrates(max_bps=2 * MAX_BITRATE)


def test_skip_alr_probe_if_estimate_larger_than_fraction_of_max_allocated() -> None:
    fx = Fixture(ProbeControllerConfig(skip_if_estimate_larger_than_fraction_of_max=1.0))
    fx.network_up()
    fx.pc.enable_periodic_alr_probing(True)
    assert fx.set_bitrates()
    fx.set_estimate(MAX_BITRATE // 2)

    fx.advance(10_000_000)
    fx.alr_start_now()
    # No probe: the total allocation is not above the current estimate.
    assert fx.allocated(MAX_BITRATE // 2) == []
    fx.advance(2_000_000)
    assert fx.process() == []

    # But if the max allocation increases, a new probe is sent.
    assert fx.allocated(MAX_BITRATE // 2 + 1)


# Beyond the C++ tests: exact cluster fields and ids of the initial probes.
def test_initial_probe_clusters_exact(f: Fixture) -> None:
    probes = f.set_bitrates()
    assert probes == [
        ProbeCluster(id=1, at_us=f.now_us, target_bps=900, duration_us=15_000, min_probes=5),
        ProbeCluster(id=2, at_us=f.now_us, target_bps=1800, duration_us=15_000, min_probes=5),
    ]
    assert f.pc.last_min_probe_delta_us == 2_000
    assert probes[1].min_bytes == 3  # 1800 bps * 15 ms = 3.375 B, rounded.
