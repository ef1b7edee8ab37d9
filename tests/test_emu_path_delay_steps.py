"""A path change (loki.emu.delay.PathDelaySteps) on the media path of a session."""

from __future__ import annotations

import numpy as np
import pytest

from loki.controllers import make_controller
from loki.emu.delay import PathDelaySteps
from loki.emu.session import LinkConfig, Session, SessionConfig
from traces.generators import constant


def test_packets_in_a_window_get_the_extra_delay_and_keep_their_order():
    stage = PathDelaySteps(((100, 200, 50),))
    assert stage.send(99, 1200) == 99
    assert stage.send(100, 1200) == 150
    assert stage.send(199, 1200) == 249
    # After the window the delay is back, but nothing overtakes the last delayed packet.
    assert stage.send(200, 1200) == 249
    assert stage.send(260, 1200) == 260
    batch = PathDelaySteps(((100, 200, 50),)).send_batch(
        np.array([99, 100, 199, 200, 260]), np.full(5, 1200)
    )
    assert batch.tolist() == [99, 150, 249, 249, 260]


@pytest.mark.parametrize("bad", [(200, 100, 50), (-1, 100, 50), (0, 100, -5)])
def test_bad_windows_are_refused(bad):
    with pytest.raises(ValueError, match="start_ms < end_ms"):
        PathDelaySteps((bad,))
    with pytest.raises(ValueError, match="path delay step"):
        LinkConfig(constant(2_000_000, 1_000), path_delay_steps_ms=(bad,))


def test_a_session_sees_the_step_in_its_one_way_delays():
    link = LinkConfig(
        constant(3_000_000, 10_000), delay_ms=20, path_delay_steps_ms=((4_000, 6_000, 500),)
    )
    s = Session(make_controller("fixed:1000"), link, SessionConfig(duration_s=9.0, seed=1))
    s.run()
    send = s.send_us
    owd_ms = (s.arrival_us - send) / 1000.0
    ok = s.arrival_us >= 0
    before = ok & (send < 3_900_000)
    during = ok & (send > 4_100_000) & (send < 5_900_000)
    after = ok & (send > 7_000_000)
    assert np.median(owd_ms[before]) < 30
    assert 500 < np.median(owd_ms[during]) < 530
    assert np.median(owd_ms[after]) < 30
