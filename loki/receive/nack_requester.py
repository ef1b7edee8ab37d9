"""Which RTP packets to NACK, and when to give up: libwebrtc's ``NackRequester``, simplified.

A gap in sequence numbers is NACKed at once; each missing packet is NACKed again once per RTT
(100 ms until an RTT is known) up to :data:`MAX_NACK_RETRIES` times. A packet that exhausts its
retries, or a NACK list longer than :data:`MAX_NACK_PACKETS`, means recovery has failed and the
caller should ask for a keyframe. A decoded keyframe clears older entries (``ClearUpTo``).
Sequence numbers are unwrapped (monotonic) integers.
"""

from __future__ import annotations

MAX_NACK_RETRIES = 10
DEFAULT_RTT_US = 100_000
MAX_NACK_PACKETS = 1_000


class NackRequester:
    __slots__ = ("_highest", "_missing", "rtt_us")

    def __init__(self) -> None:
        self._highest = -1
        self._missing: dict[int, list[int]] = {}  # seq -> [last NACK us, retries]
        self.rtt_us = DEFAULT_RTT_US

    def on_packet(self, seq: int, now_us: int, nacks: list[int]) -> bool:
        """Record an arriving packet; append newly missing seqs to ``nacks``.

        Returns False for a duplicate (or a packet recovery had already given up on).
        """
        hi = self._highest
        if seq > hi:
            if seq > hi + 1:
                for s in range(hi + 1, seq):
                    self._missing[s] = [now_us, 0]
                    nacks.append(s)
            self._highest = seq
            return True
        return self._missing.pop(seq, None) is not None

    def retries_due(self, now_us: int) -> tuple[list[int], bool]:
        """NACKs due again now, and whether recovery gave up on some packet."""
        due: list[int] = []
        gave_up = len(self._missing) > MAX_NACK_PACKETS
        if gave_up:
            self._missing.clear()
        wait = self.rtt_us
        for s, st in list(self._missing.items()):
            if now_us - st[0] >= wait:
                if st[1] >= MAX_NACK_RETRIES:
                    del self._missing[s]
                    gave_up = True
                    continue
                st[0] = now_us
                st[1] += 1
                due.append(s)
        return due, gave_up

    def clear_up_to(self, seq: int) -> None:
        """Forget missing packets older than ``seq`` (a keyframe starting at ``seq`` decoded)."""
        for s in [s for s in self._missing if s < seq]:
            del self._missing[s]

    @property
    def highest_seq(self) -> int:
        return self._highest

    def __len__(self) -> int:
        return len(self._missing)
