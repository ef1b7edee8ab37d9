"""When to ask the sender for a keyframe (PLI): libwebrtc's ``VideoReceiveStream2`` policy.

A keyframe is required once nothing has been decodable for :data:`MAX_WAIT_FOR_FRAME_US`
(3 s) while frames keep arriving, or once NACK gave up on a packet. While required, ask again
every :data:`KEYFRAME_WAIT_US` until a keyframe decodes — but not while packets of a keyframe
are arriving (``IsReceivingKeyFrame``), so a keyframe stuck in a long queue does not trigger a
storm of further keyframes.
"""

from __future__ import annotations

KEYFRAME_WAIT_US = 200_000
MAX_WAIT_FOR_FRAME_US = 3_000_000


class KeyframeRequester:
    __slots__ = (
        "_last_decode_us",
        "_last_keyframe_packet_us",
        "_last_request_us",
        "_required",
        "_waiting_frames",
        "requests",
    )

    def __init__(self) -> None:
        self._required = False
        self._last_decode_us = 0
        self._last_keyframe_packet_us = -MAX_WAIT_FOR_FRAME_US
        self._last_request_us = -KEYFRAME_WAIT_US
        self._waiting_frames = False
        self.requests = 0

    def on_keyframe_packet(self, now_us: int) -> None:
        self._last_keyframe_packet_us = now_us

    def on_frame_waiting(self) -> None:
        """A packet of a frame newer than the last decoded one arrived."""
        self._waiting_frames = True

    def on_decoded(self, now_us: int, keyframe: bool, frames_waiting: bool) -> None:
        self._last_decode_us = now_us
        self._waiting_frames = frames_waiting
        if keyframe:
            self._required = False

    def should_request(self, now_us: int, nack_gave_up: bool = False) -> bool:
        """Whether to send a PLI now (call periodically, e.g. every 20 ms)."""
        if nack_gave_up:
            self._required = True
        if not self._required:
            if not self._waiting_frames or now_us - self._last_decode_us < MAX_WAIT_FOR_FRAME_US:
                return False
            self._required = True
        if now_us - self._last_request_us < KEYFRAME_WAIT_US:
            return False
        if now_us - self._last_keyframe_packet_us < KEYFRAME_WAIT_US:
            return False
        self._last_request_us = now_us
        self.requests += 1
        return True
