"""When to ask the sender for a keyframe (PLI): libwebrtc's ``VideoReceiveStream2`` policy.

A keyframe is required once nothing has been decodable for :data:`MAX_WAIT_FOR_FRAME_US`
(3 s) while frames keep arriving, or once NACK gave up on a packet. While required, ask again
every :data:`KEYFRAME_WAIT_US` until a keyframe decodes — but not while packets of a keyframe
are arriving (``IsReceivingKeyFrame``), so a keyframe stuck in a long queue does not trigger a
storm of further keyframes.
"""

from __future__ import annotations

import numpy as np
from numba import njit

KEYFRAME_WAIT_US = 200_000
MAX_WAIT_FOR_FRAME_US = 3_000_000


# State, in one int64 array so that compiled code (the emulator's receiver) and the class below
# share one implementation.
REQUIRED = 0
LAST_DECODE_US = 1
LAST_KEYFRAME_PACKET_US = 2
LAST_REQUEST_US = 3
WAITING_FRAMES = 4
REQUESTS = 5
N_STATE = 6


def new_keyframe_state() -> np.ndarray:
    st = np.zeros(N_STATE, dtype=np.int64)
    st[LAST_KEYFRAME_PACKET_US] = -MAX_WAIT_FOR_FRAME_US
    st[LAST_REQUEST_US] = -KEYFRAME_WAIT_US
    return st


@njit(cache=True)
def keyframe_on_decoded(st: np.ndarray, now_us: int, keyframe: bool, frames_waiting: bool) -> None:
    st[LAST_DECODE_US] = now_us
    st[WAITING_FRAMES] = frames_waiting
    if keyframe:
        st[REQUIRED] = 0


@njit(cache=True)
def keyframe_should_request(st: np.ndarray, now_us: int, nack_gave_up: bool) -> bool:
    """Whether to send a PLI now (call periodically, e.g. every 20 ms)."""
    if nack_gave_up:
        st[REQUIRED] = 1
    if not st[REQUIRED]:
        if not st[WAITING_FRAMES] or now_us - st[LAST_DECODE_US] < MAX_WAIT_FOR_FRAME_US:
            return False
        st[REQUIRED] = 1
    if now_us - st[LAST_REQUEST_US] < KEYFRAME_WAIT_US:
        return False
    if now_us - st[LAST_KEYFRAME_PACKET_US] < KEYFRAME_WAIT_US:
        return False
    st[LAST_REQUEST_US] = now_us
    st[REQUESTS] += 1
    return True


class KeyframeRequester:
    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = new_keyframe_state()

    def on_keyframe_packet(self, now_us: int) -> None:
        self.state[LAST_KEYFRAME_PACKET_US] = now_us

    def on_frame_waiting(self) -> None:
        """A packet of a frame newer than the last decoded one arrived."""
        self.state[WAITING_FRAMES] = 1

    def on_decoded(self, now_us: int, keyframe: bool, frames_waiting: bool) -> None:
        keyframe_on_decoded(self.state, now_us, keyframe, frames_waiting)

    def should_request(self, now_us: int, nack_gave_up: bool = False) -> bool:
        """Whether to send a PLI now (call periodically, e.g. every 20 ms)."""
        return bool(keyframe_should_request(self.state, now_us, nack_gave_up))

    @property
    def requests(self) -> int:
        return int(self.state[REQUESTS])


def _warm_up() -> None:
    """Load the compiled code now (from numba's cache) rather than at the first packet: the first
    compiled call in a process takes about 0.15 s, a stall a live sender or relay must not
    have mid-session."""
    requester = KeyframeRequester()
    requester.on_decoded(0, True, False)
    requester.should_request(0, True)


_warm_up()
