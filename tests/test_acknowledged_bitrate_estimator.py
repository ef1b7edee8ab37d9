"""Port of libwebrtc's ``acknowledged_bitrate_estimator_unittest.cc``.

The C++ test mocks ``BitrateEstimator`` and checks the calls it receives; here a recording
subclass plays the mock. Two packets: 10 B sent at 10 ms and received at 10 ms, 20 B sent and
received at 20 ms.
"""

from __future__ import annotations

from gcc.acknowledged_bitrate_estimator import AcknowledgedBitrateEstimator
from gcc.bitrate_estimator import BitrateEstimator

FIRST_ARRIVAL_TIME_MS = 10
FIRST_SEND_TIME_MS = 10
PAYLOAD_SIZE = 10


class RecordingBitrateEstimator(BitrateEstimator):
    __slots__ = ("bitrate_value", "calls")

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple] = []
        self.bitrate_value: int | None = None

    def update(self, at_us: int, amount_bytes: int, in_alr: bool) -> None:
        self.calls.append(("update", at_us, amount_bytes, in_alr))

    def expect_fast_rate_change(self) -> None:
        self.calls.append(("expect_fast_rate_change",))

    def bitrate(self) -> int | None:
        self.calls.append(("bitrate",))
        return self.bitrate_value


def create_feedback_vector() -> tuple[list[int], list[int], list[int]]:
    send_us = [FIRST_SEND_TIME_MS * 1000, (FIRST_SEND_TIME_MS + 10) * 1000]
    arrival_us = [FIRST_ARRIVAL_TIME_MS * 1000, (FIRST_ARRIVAL_TIME_MS + 10) * 1000]
    size_bytes = [PAYLOAD_SIZE, PAYLOAD_SIZE + 10]
    return send_us, arrival_us, size_bytes


def test_update_bandwidth() -> None:
    mock = RecordingBitrateEstimator()
    estimator = AcknowledgedBitrateEstimator(mock)
    send_us, arrival_us, size_bytes = create_feedback_vector()
    estimator.incoming_packet_feedback_vector(send_us, arrival_us, size_bytes)
    assert mock.calls == [
        ("update", arrival_us[0], size_bytes[0], False),
        ("update", arrival_us[1], size_bytes[1], False),
    ]


def test_expect_fast_rate_change_when_left_alr() -> None:
    mock = RecordingBitrateEstimator()
    estimator = AcknowledgedBitrateEstimator(mock)
    send_us, arrival_us, size_bytes = create_feedback_vector()
    estimator.set_alr_ended_time((FIRST_ARRIVAL_TIME_MS + 1) * 1000)
    estimator.incoming_packet_feedback_vector(send_us, arrival_us, size_bytes)
    assert mock.calls == [
        ("update", arrival_us[0], size_bytes[0], False),
        ("expect_fast_rate_change",),
        ("update", arrival_us[1], size_bytes[1], False),
    ]


def test_return_bitrate() -> None:
    mock = RecordingBitrateEstimator()
    mock.bitrate_value = 42_000
    estimator = AcknowledgedBitrateEstimator(mock)
    assert estimator.bitrate() == 42_000
    assert mock.calls == [("bitrate",)]


# Beyond the C++ test: the ALR flag reaches the filter, and the real filter is the default.
def test_in_alr_is_passed_to_bitrate_estimator() -> None:
    mock = RecordingBitrateEstimator()
    estimator = AcknowledgedBitrateEstimator(mock)
    estimator.set_alr(True)
    send_us, arrival_us, size_bytes = create_feedback_vector()
    estimator.incoming_packet_feedback_vector(send_us, arrival_us, size_bytes)
    assert [c[3] for c in mock.calls] == [True, True]


def test_default_estimator_measures_acknowledged_rate() -> None:
    estimator = AcknowledgedBitrateEstimator()
    times_us = list(range(0, 510_000, 10_000))  # 1000 B every 10 ms for 500 ms.
    estimator.incoming_packet_feedback_vector(times_us, times_us, [1000] * len(times_us))
    assert estimator.bitrate() == 800_000
    assert estimator.peek_rate() is None  # The new window holds no time yet.
