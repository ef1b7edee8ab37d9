"""Fuzz the transport-cc path, bytes to controller: parser, sender's adapter, guard, GCC.

    .venv/bin/python bench/fuzz_feedback.py [--runs 200000] [--seed 1] [--json out.json]

Coverage-guided with atheris (libFuzzer) when it is installed; otherwise the same oracle runs on
inputs from a seeded generator of its own (random bytes and mutated valid packets), and the
output says which. Every input goes through :func:`check_packet`:

* the parser either returns a packet or raises :class:`TransportFeedbackError`; any other
  exception is a failure (aiortc's receive loop would die of it);
* a parsed packet must be self-consistent (1..65535 statuses, arrival times on the 250 us grid);
* it then goes through a :class:`SendHistory` / :class:`TransportFeedbackAdapter` pair and a
  guarded GCC, which must not raise and must answer a target within its bounds.

Failures are collected (the input's hex and the traceback's last line), not raised, so that one
run counts them all. The script prints how many inputs were tried and how many failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gcc.goog_cc_network_control import GoogCcNetworkController
from loki.api import NO_PROBE
from loki.guard import FeedbackGuard
from rtc.feedback_adapter import SendHistory, TransportFeedbackAdapter
from rtc.transport_feedback import (
    DELTA_TICK_US,
    MAX_STATUS_COUNT,
    TransportCcFeedback,
    TransportFeedbackError,
    build_rtcp,
    parse_fci,
    parse_rtcp,
    reference_time_for,
)

#: Packets in the sender's history when a chain starts: sequence numbers 0 .. N-1.
HISTORY_PACKETS = 3_000
#: A chain (history, adapter, controller) is rebuilt after this many inputs, so its state stays
#: interesting (reports keep hitting known packets) without growing for ever.
CHAIN_INPUTS = 500
SEND_INTERVAL_US = 1_000
PACKET_BYTES = 1_200
RTCP_HEADER_BYTES = 4
FIXED_FCI_BYTES = 16


class FeedbackChain:
    """The sender side of one session: send history, adapter and a guarded GCC."""

    def __init__(self) -> None:
        self.history = SendHistory()
        for seq in range(HISTORY_PACKETS):
            probe = seq // 100 if seq % 50 == 0 else NO_PROBE
            self.history.add(seq, seq * SEND_INTERVAL_US, PACKET_BYTES, probe)
        self.adapter = TransportFeedbackAdapter(self.history)
        self.controller = FeedbackGuard(GoogCcNetworkController())
        self.now_us = HISTORY_PACKETS * SEND_INTERVAL_US

    def feed(self, feedback: TransportCcFeedback) -> None:
        self.now_us += 20_000
        report = self.adapter.on_feedback(feedback, self.now_us)
        if report is not None:
            self.controller.on_feedback(report)
        self.controller.on_process_interval(self.now_us)
        target = self.controller.target_bps
        c = self.controller.config
        if not (isinstance(target, int) and c.min_bps <= target <= c.max_bps):
            raise AssertionError(f"target {target!r} outside [{c.min_bps}, {c.max_bps}]")


@dataclass
class FuzzStats:
    """What a run tried and found."""

    inputs: int = 0
    parsed: int = 0
    rejected: int = 0
    reports: int = 0
    failures: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "inputs": self.inputs,
            "parsed": self.parsed,
            "rejected": self.rejected,
            "reports": self.reports,
            "failures": len(self.failures),
            "failure_examples": self.failures[:20],
        }


def check_parsed(fb: TransportCcFeedback) -> None:
    """Invariants any parsed packet keeps, whatever bytes it came from."""
    if not 1 <= fb.status_count <= MAX_STATUS_COUNT:
        raise AssertionError(f"status count {fb.status_count}")
    if not (0 <= fb.base_seq < 1 << 16 and 0 <= fb.feedback_count < 1 << 8):
        raise AssertionError("base sequence number or feedback count out of range")
    for t in fb.arrival_us:
        if t is not None and t % DELTA_TICK_US:
            raise AssertionError(f"arrival {t} us is off the 250 us grid")


def check_packet(data: bytes, chain: FeedbackChain, stats: FuzzStats, whole: bool) -> None:
    """Run one input through the chain; record a failure instead of raising."""
    stats.inputs += 1
    try:
        try:
            fb = parse_rtcp(data) if whole else parse_fci(data)
        except TransportFeedbackError:
            stats.rejected += 1
            return
        stats.parsed += 1
        check_parsed(fb)
        before = chain.adapter.reports
        chain.feed(fb)
        stats.reports += chain.adapter.reports - before
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        stats.failures.append(
            {
                "input_hex": data.hex(),
                "whole_rtcp": whole,
                "error": f"{type(e).__name__}: {e}",
                "at": f"{Path(tb.filename).name}:{tb.lineno}",
            }
        )


# -- inputs without atheris: random bytes and mutated valid packets ------------------------------
def valid_packet(rng: random.Random) -> bytes:
    """A well-formed packet about the chain's history (so some of it reaches the controller)."""
    n = rng.choice([1, 2, 7, 14, 15, 50, 300, 2_000])
    base = rng.choice([0, rng.randrange(HISTORY_PACKETS), 65_530, rng.randrange(65_536)])
    t = rng.randrange(0, 10**9)
    arrivals: list[int | None] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.15:
            arrivals.append(None)
            continue
        t += rng.choice([0, 250, 1_000, 64_000, 100_000, -3_000, 7_000_000, -7_000_000])
        t = max(t, 0)
        arrivals.append(t)
    first = next((a for a in arrivals if a is not None), 0)
    fb = TransportCcFeedback(
        sender_ssrc=rng.getrandbits(32),
        media_ssrc=rng.getrandbits(32),
        base_seq=base,
        reference_time=reference_time_for(first),
        feedback_count=rng.randrange(256),
        arrival_us=tuple(arrivals),
    )
    try:
        return build_rtcp(fb)
    except TransportFeedbackError:
        return build_rtcp(TransportCcFeedback(1, 2, base, 0, 0, (None,)))


def mutate(packet: bytes, rng: random.Random) -> bytes:
    """One of the corruptions a network or a broken receiver produces."""
    b = bytearray(packet)
    fci = RTCP_HEADER_BYTES
    kind = rng.randrange(10)
    if kind == 0 and len(b) > 1:  # truncated
        del b[rng.randrange(1, len(b)) :]
    elif kind == 1:  # padded with junk (or zeros)
        b += bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 9)))
    elif kind == 2 and len(b) >= fci + 12:  # oversized or zero status count
        struct.pack_into("!H", b, fci + 10, rng.choice([0, 0xFFFF, 0x8000, len(b) * 8]))
    elif kind == 3 and len(b) >= fci + FIXED_FCI_BYTES + 2:  # bad chunk types / symbols
        struct.pack_into("!H", b, fci + FIXED_FCI_BYTES, rng.choice([0x6000, 0xFFFF, 0x7FFF]))
    elif kind == 4 and len(b) > fci + FIXED_FCI_BYTES:  # deltas: negative, huge
        i = rng.randrange(fci + FIXED_FCI_BYTES, len(b))
        b[i] = rng.choice([0x80, 0xFF, 0x7F, 0x00])
    elif kind == 5 and len(b) >= fci + 10:  # base sequence number near the wrap
        struct.pack_into("!H", b, fci + 8, rng.choice([65_535, 65_534, 0]))
    elif kind == 6 and len(b) >= 4:  # RTCP length field lies
        struct.pack_into("!H", b, 2, rng.choice([0, 1, 0xFFFF, len(b) // 4 + 1]))
    elif kind == 7 and b:  # padding bit and count
        b[0] ^= 0x20
        b[-1] = rng.randrange(256)
    elif kind == 8 and len(b) >= fci + 15:  # reference time wrap
        b[fci + 12 : fci + 15] = rng.choice([b"\xff\xff\xff", b"\x00\x00\x00"])
    elif b:  # a random bit
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def generated_inputs(rng: random.Random):
    """(bytes, whole RTCP packet?) forever: a third random, the rest mutated valid packets."""
    while True:
        if rng.random() < 0.3:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80)))
            yield data, rng.random() < 0.5
            continue
        pkt = valid_packet(rng)
        for _ in range(rng.randrange(0, 4)):
            pkt = mutate(pkt, rng)
        whole = rng.random() < 0.7
        yield (pkt if whole else pkt[RTCP_HEADER_BYTES:]), whole


def run_generated(runs: int, seed: int) -> FuzzStats:
    rng = random.Random(seed)
    stats = FuzzStats()
    chain = FeedbackChain()
    for i, (data, whole) in enumerate(generated_inputs(rng)):
        if i >= runs:
            break
        if i % CHAIN_INPUTS == CHAIN_INPUTS - 1:
            chain = FeedbackChain()
        check_packet(data, chain, stats, whole)
    return stats


def run_atheris(runs: int, seed: int, finish) -> None:
    """libFuzzer never returns (it exits the process), so ``finish(stats)`` ends the run."""
    import atheris

    stats = FuzzStats()
    state = {"chain": FeedbackChain()}

    def one_input(data: bytes) -> None:
        if stats.inputs % CHAIN_INPUTS == CHAIN_INPUTS - 1:
            state["chain"] = FeedbackChain()
        # The first byte picks the entry point: the whole RTCP packet or its FCI.
        whole = bool(data[:1]) and data[0] & 1 == 1
        check_packet(data[1:], state["chain"], stats, whole)
        if stats.inputs >= runs:
            finish(stats)

    # Seed corpus: valid packets of the shapes the builder makes, in a fresh folder per seed.
    corpus = Path(f"/tmp/loki-fuzz-corpus-{seed}")
    corpus.mkdir(exist_ok=True)
    rng = random.Random(seed)
    for i in range(64):
        (corpus / f"valid-{i}").write_bytes(b"\x01" + valid_packet(rng))
    for fn in (parse_fci, parse_rtcp, TransportFeedbackAdapter.on_feedback, FeedbackGuard.sanitize):
        atheris.instrument_func(fn)
    atheris.Setup([sys.argv[0], f"-seed={seed}", "-max_len=4096", str(corpus)], one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=200_000, help="inputs to try")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--engine", choices=("auto", "atheris", "generated"), default="auto")
    p.add_argument("--json", type=Path, help="write the counts and failing inputs as JSON")
    args = p.parse_args(argv)
    if args.runs <= 0:
        p.error("--runs must be > 0")
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "generated"
        else:
            engine = "atheris"
    started = time.monotonic()

    def finish(stats: FuzzStats) -> None:
        elapsed_s = time.monotonic() - started
        summary = {"engine": engine, "seed": args.seed, "elapsed_s": round(elapsed_s, 1)}
        summary.update(stats.to_dict())
        print(
            f"engine {engine}: {stats.inputs} inputs tried in {elapsed_s:.0f} s, {stats.parsed} "
            f"parsed, {stats.rejected} rejected as malformed, {stats.reports} reached the "
            f"controller; {len(stats.failures)} failures",
            flush=True,
        )
        for f in stats.failures[:5]:
            print(f"  {f['error']} at {f['at']}: {f['input_hex'][:120]}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(summary, indent=1))
        sys.stdout.flush()
        os._exit(1 if stats.failures else 0)

    if engine == "atheris":
        run_atheris(args.runs, args.seed, finish)
    finish(run_generated(args.runs, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
