"""The delay detector's verdict on the path, shared by the detector and the rate controller.

Mirrors libwebrtc's ``BandwidthUsage`` (``api/transport/bandwidth_usage.h``), with its values.
"""

from __future__ import annotations

from enum import IntEnum


class BandwidthUsage(IntEnum):
    """Whether queueing delay is steady, draining or building up."""

    NORMAL = 0
    UNDERUSING = 1
    OVERUSING = 2
