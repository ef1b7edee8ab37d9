"""Packet-level emulator of mahimahi's link stages (mm-link, mm-delay, mm-loss), far faster than
real time: each stage is a function call per packet that returns the packet's exit time."""

from loki.emu.cbr import (
    DEFAULT_PAYLOAD_BYTES,
    IP_UDP_HEADER_BYTES,
    CbrLog,
    cbr_send_times_us,
    run_cbr,
)
from loki.emu.delay import Delay
from loki.emu.link import DROPPED, TUN_HEADER_BYTES, DropTail, Link
from loki.emu.loss import LOST, Loss
from loki.emu.path import Path, Stage, feedback_path, uplink_path

__all__ = [
    "DEFAULT_PAYLOAD_BYTES",
    "DROPPED",
    "IP_UDP_HEADER_BYTES",
    "LOST",
    "TUN_HEADER_BYTES",
    "CbrLog",
    "Delay",
    "DropTail",
    "Link",
    "Loss",
    "Path",
    "Stage",
    "cbr_send_times_us",
    "feedback_path",
    "run_cbr",
    "uplink_path",
]
