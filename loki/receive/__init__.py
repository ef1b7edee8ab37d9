"""Receive-side policies of a WebRTC video receiver, shared by the emulator and the live receiver.

One concept per module, after libwebrtc's names: :mod:`nack_requester` (which packets to NACK
and when to give up), :mod:`timing` (when a decoded frame is rendered: jitter buffer delay) and
:mod:`keyframe_request` (when to send a PLI). Both receivers feed them the same events, so a
stall means the same thing in an emulated and in a live session.
"""

from loki.receive.keyframe_request import KeyframeRequester
from loki.receive.nack_requester import NackRequester
from loki.receive.timing import PlayoutTiming

__all__ = ["KeyframeRequester", "NackRequester", "PlayoutTiming"]
