"""The sender's per-packet path, compiled: pacer -> (loss) -> mm-link -> delay -> send history.

:class:`loki.emu.session.Session` keeps its event loop in Python, but the work per packet runs
here: :func:`pace` runs pace events one after another as long as each would be the very next
event the session's loop pops (earlier than every event on the heap, within the session), and
records every packet in the send history with its arrival time. It stops and tells the caller
what to do when the loop must take over:

* :data:`PUSH_PACE`: the next pace event is not next in line; push it at ``path[S_OUT_T_US]``;
* :data:`DELIVER_FIRST`: the next pace event is next in line, but arrivals before it must be
  delivered first, because the receiver may answer one with a NACK (a lost packet it has not
  seen past yet); otherwise their delivery changes nothing the sender sees and waits for the
  next event off the heap;
* :data:`NEED_HISTORY_ROOM`, :data:`NEED_LINK_ROOM`, :data:`NEED_DRAWS`: a table is full or the
  loss stage needs its next block of draws; fix that and call again with :data:`SEND_AT` at
  ``path[S_OUT_T_US]``: each packet is checked for room before it leaves the pacer, so that
  resumes the pace event where it stopped;
* :data:`NEED_FRAME_ROOM`, :data:`NEED_RTP_ROOM`, :data:`NEED_MEDIA_ROOM` (mode :data:`FRAME`
  only): the frame table, the RTP table or the pacer's media ring has no room for the frame;
  nothing was done: make room and call again in the same mode.

:func:`packetise` splits an encoded frame into RTP packets and queues them in the pacer.

The helpers :func:`pace` calls are inlined into it (numba's ``inline="always"``): a compiled
call passing a dozen arrays costs more than the work a pace event does, and inlined, a call to
:func:`pace` takes about a third less time. They stay callable on their own.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from loki.emu.link import HAS_QUEUE, WAIT_COUNT, link_send
from loki.emu.loss import POS, loss_send
from loki.emu.pacer import (
    MEDIA_COUNT,
    MEDIA_HEAD,
    NOTHING_TO_SEND,
    pacer_enqueue,
    pacer_next_send_us,
    pacer_pop_due,
)
from loki.emu.receiver import (
    F_BYTES,
    F_CAPTURE_US,
    F_FIRST_RTP,
    F_GOT,
    F_IS_KEY,
    F_NACKED,
    F_NPKTS,
    H_ARRIVAL_US,
    H_PROBE,
    H_RTP,
    H_RTX,
    H_SEND_US,
    H_SIZE,
    NO_ARRIVAL_US,
    R_FIRST_TX_US,
    R_FRAME,
    R_LAST_TX_US,
    R_RETRANSMITTED,
    R_SIZE,
    S_DELAY_MS,
    S_END_US,
    S_HAS_LOSS,
    S_LOST_RTP_MAX,
    S_N_FRAMES,
    S_N_HIST,
    S_N_RTP,
    S_NOW_US,
    S_OUT_T_US,
    S_RX_NEXT_US,
)
from loki.receive.nack_requester import HIGHEST

MAX_RTP_PAYLOAD_BYTES = 1200
#: RTP header 12 + transport-wide seq extension 8 + SRTP tag 10 + UDP/IPv4 28.
PACKET_OVERHEAD_BYTES = 58

# pace() modes.
#: ``Session._schedule_pace(now, run_now=True)``: schedule the pacer's next send from ``now``.
SCHEDULE = 0
#: A pace event at ``now``: send what is due, then schedule the next one.
SEND_AT = 1
#: A frame encoded at ``now``: :func:`packetise` it, then SCHEDULE.
FRAME = 2
# pace() answers.
IDLE = 0
PUSH_PACE = 1
DELIVER_FIRST = 2
NEED_HISTORY_ROOM = 3
NEED_LINK_ROOM = 4
NEED_DRAWS = 5
NEED_FRAME_ROOM = 6
NEED_RTP_ROOM = 7
NEED_MEDIA_ROOM = 8


@njit(cache=True, inline="always")
def record_send(
    hist: np.ndarray,
    rtp: np.ndarray,
    n: int,
    now_us: int,
    size: int,
    rtp_seq: int,
    probe: int,
) -> None:
    """Write packet ``n`` into the send history (a retransmission when its RTP packet left
    before); shared by the compiled send path and the session's generic Python stages."""
    hist[H_SEND_US, n] = now_us
    hist[H_SIZE, n] = size
    hist[H_PROBE, n] = probe
    hist[H_RTP, n] = rtp_seq
    if rtp_seq >= 0:
        hist[H_RTX, n] = rtp[R_LAST_TX_US, rtp_seq] >= 0
        rtp[R_LAST_TX_US, rtp_seq] = now_us
    else:
        hist[H_RTX, n] = 0


@njit(cache=True)
def pace(
    mode: int,
    now_us: int,
    horizon_us: int,
    frame_bytes: int,
    frame_is_key: bool,
    path: np.ndarray,
    pace_at: np.ndarray,
    pi: np.ndarray,
    pf: np.ndarray,
    media: np.ndarray,
    rtx: np.ndarray,
    probes: np.ndarray,
    loss_state: np.ndarray,
    lost_flags: np.ndarray,
    link_state: np.ndarray,
    ops_ms: np.ndarray,
    first_after: np.ndarray,
    wait_start_ms: np.ndarray,
    wait_charge_bytes: np.ndarray,
    hist: np.ndarray,
    rtp: np.ndarray,
    frames: np.ndarray,
    nack_state: np.ndarray,
) -> int:
    """Run pace events from ``now_us`` while each is the next event (see the module docstring).

    ``horizon_us`` is the time of the first event on the session's heap; ``pace_at[0]`` the
    pending pace time (NaN: none), kept up to date here. In mode :data:`FRAME`, the frame of
    ``frame_bytes`` is packetised first, if the tables and the pacer have room for it.
    """
    at_us = now_us
    if mode == FRAME:
        status = frame_room(path, frames, rtp, pi, media, frame_bytes)
        if status != IDLE:
            return status
        packetise(path, frames, rtp, pi, pf, media, frame_bytes, frame_is_key, now_us)
        mode = SCHEDULE
    if mode == SCHEDULE:
        t = pacer_next_send_us(pi, pf, probes, now_us)
        if t == NOTHING_TO_SEND or (not math.isnan(pace_at[0]) and t >= pace_at[0]):
            return IDLE
        pace_at[0] = t
        at_us = math.ceil(t)
    while True:
        if mode == SCHEDULE:
            if at_us > path[S_END_US] or horizon_us <= at_us:
                path[S_OUT_T_US] = at_us
                return PUSH_PACE
            if path[S_RX_NEXT_US] <= at_us and path[S_LOST_RTP_MAX] > nack_state[HIGHEST]:
                path[S_OUT_T_US] = at_us
                return DELIVER_FIRST
        mode = SCHEDULE
        # The pace event at at_us.
        path[S_NOW_US] = at_us
        pace_at[0] = np.nan
        status = _send_due(
            at_us, path, pi, pf, media, rtx, probes, loss_state, lost_flags, link_state,
            ops_ms, first_after, wait_start_ms, wait_charge_bytes, hist, rtp,
        )  # fmt: skip
        if status != IDLE:
            path[S_OUT_T_US] = at_us
            return status
        t = pacer_next_send_us(pi, pf, probes, at_us)
        if t == NOTHING_TO_SEND:
            return IDLE
        pace_at[0] = t
        at_us = math.ceil(t)


@njit(cache=True, inline="always")
def _send_due(
    now_us: int,
    path: np.ndarray,
    pi: np.ndarray,
    pf: np.ndarray,
    media: np.ndarray,
    rtx: np.ndarray,
    probes: np.ndarray,
    loss_state: np.ndarray,
    lost_flags: np.ndarray,
    link_state: np.ndarray,
    ops_ms: np.ndarray,
    first_after: np.ndarray,
    wait_start_ms: np.ndarray,
    wait_charge_bytes: np.ndarray,
    hist: np.ndarray,
    rtp: np.ndarray,
) -> int:
    """Send every packet the pacer releases at ``now_us`` into the uplink."""
    now_ms = now_us // 1000
    has_loss = path[S_HAS_LOSS] != 0
    delay_ms = path[S_DELAY_MS]
    while True:
        n = path[S_N_HIST]
        if n == hist.shape[1]:
            return NEED_HISTORY_ROOM
        if link_state[HAS_QUEUE] and link_state[WAIT_COUNT] == wait_start_ms.shape[0]:
            return NEED_LINK_ROOM
        if has_loss and loss_state[POS] >= lost_flags.shape[0]:
            return NEED_DRAWS
        size, rtp_seq, _frame, probe = pacer_pop_due(pi, pf, media, rtx, probes, now_us)
        if size < 0:
            return IDLE
        record_send(hist, rtp, n, now_us, size, rtp_seq, probe)
        # mm-loss, then mm-link, then mm-delay (see loki.emu.path).
        exit_ms = loss_send(loss_state, lost_flags, now_ms) if has_loss else now_ms
        if exit_ms >= 0:
            exit_ms = link_send(
                link_state, ops_ms, first_after, wait_start_ms, wait_charge_bytes, exit_ms, size
            )
        if exit_ms < 0:
            hist[H_ARRIVAL_US, n] = -1
            if rtp_seq > path[S_LOST_RTP_MAX]:
                path[S_LOST_RTP_MAX] = rtp_seq
        else:
            arrival_us = (exit_ms + delay_ms) * 1000
            hist[H_ARRIVAL_US, n] = arrival_us
            if path[S_RX_NEXT_US] == NO_ARRIVAL_US:
                path[S_RX_NEXT_US] = arrival_us
        path[S_N_HIST] = n + 1


@njit(cache=True, inline="always")
def packet_count(frame_bytes: int) -> int:
    """RTP packets a frame of ``frame_bytes`` is split into (at least one)."""
    return max(1, -(-frame_bytes // MAX_RTP_PAYLOAD_BYTES))


@njit(cache=True, inline="always")
def frame_room(
    path: np.ndarray,
    frames: np.ndarray,
    rtp: np.ndarray,
    pi: np.ndarray,
    media: np.ndarray,
    frame_bytes: int,
) -> int:
    """:data:`IDLE` if the frame table, the RTP table and the pacer's media ring have room for
    a frame of ``frame_bytes``, else the first that has none (:data:`NEED_FRAME_ROOM`, ...)."""
    n = packet_count(frame_bytes)
    if path[S_N_FRAMES] == frames.shape[1]:
        return NEED_FRAME_ROOM
    if path[S_N_RTP] + n > rtp.shape[1]:
        return NEED_RTP_ROOM
    if pi[MEDIA_COUNT] + n > media.shape[0]:
        return NEED_MEDIA_ROOM
    return IDLE


@njit(cache=True, inline="always")
def packetise(
    path: np.ndarray,
    frames: np.ndarray,
    rtp: np.ndarray,
    pi: np.ndarray,
    pf: np.ndarray,
    media: np.ndarray,
    size_bytes: int,
    is_key: bool,
    now_us: int,
) -> int:
    """Add an encoded frame to the frame table, its RTP packets to the RTP table and the pacer.

    The payload is split evenly over ``ceil(size / MAX_RTP_PAYLOAD_BYTES)`` packets, the first
    ``size % n`` one byte larger. The caller makes room in all three (:func:`frame_room`).
    Returns the packet count.
    """
    n = packet_count(size_bytes)
    fid = path[S_N_FRAMES]
    first_rtp = path[S_N_RTP]
    frames[F_NPKTS, fid] = n
    frames[F_IS_KEY, fid] = is_key
    frames[F_CAPTURE_US, fid] = now_us
    frames[F_BYTES, fid] = size_bytes
    frames[F_FIRST_RTP, fid] = first_rtp
    frames[F_GOT, fid] = 0
    frames[F_NACKED, fid] = 0
    base = size_bytes // n
    extra = size_bytes % n
    for i in range(n):
        ip_bytes = base + (1 if i < extra else 0) + PACKET_OVERHEAD_BYTES
        seq = first_rtp + i
        rtp[R_SIZE, seq] = ip_bytes
        rtp[R_FRAME, seq] = fid
        rtp[R_LAST_TX_US, seq] = -1
        rtp[R_FIRST_TX_US, seq] = now_us
        rtp[R_RETRANSMITTED, seq] = 0
        pacer_enqueue(pi, pf, media, MEDIA_HEAD, ip_bytes, seq, fid, -1, now_us)
    path[S_N_FRAMES] = fid + 1
    path[S_N_RTP] = first_rtp + n
    return n
