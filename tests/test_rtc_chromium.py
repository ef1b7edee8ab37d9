"""Headless Chromium as the receiver: transport-cc negotiated and parsed, the rate adapts.

Skipped, with the reason, where Debian's chromium or playwright is not installed.
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("aiortc")

from rtc.chromium_receiver import ChromiumUnavailableError, check_available

try:
    check_available()
    REASON = ""
except ChromiumUnavailableError as e:
    REASON = str(e)

pytestmark = pytest.mark.skipif(bool(REASON), reason=REASON or "chromium available")


def test_chromium_receiver_session() -> None:
    from rtc.session import LiveConfig, run_live

    result = asyncio.run(
        run_live(
            LiveConfig(source=("builtin", "const-2.5mbps"), duration_s=6.0, receiver="chromium")
        )
    )
    stats = result.stats
    # Chromium sends transport-cc about 16 times a second once it is negotiated.
    assert stats["feedback_reports"] >= 40
    assert stats["malformed_feedback"] == 0
    assert stats["unknown_feedback_packets"] == 0
    # The rate adapts: GCC moved well above its 300 kbps start on a 2.5 Mbps link.
    targets = [b for _, b in result.decisions]
    assert len(targets) > 20 and max(targets) > 900_000
    chromium = stats["chromium"]
    assert chromium["framesDecoded"] >= 120
    assert chromium["keyFramesDecoded"] <= 2
    assert result.qoe.frames_rendered >= 100
