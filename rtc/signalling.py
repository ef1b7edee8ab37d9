"""In-process signalling helpers: point each peer's ICE candidates at the relay.

Both peers run on this machine and exchange SDP directly (no signalling server). Before an
offer or answer is handed to the other side, every candidate in it is replaced by a single
loopback host candidate at the relay port that forwards to its author, so all media, feedback,
ICE and DTLS pass through :mod:`rtc.relay`.
"""

from __future__ import annotations

RELAY_HOST = "127.0.0.1"
#: RFC 8445 host-candidate priority for component 1 (type preference 126, local 65535).
HOST_PRIORITY = 2130706431


def relay_candidate(port: int, host: str = RELAY_HOST) -> str:
    return f"a=candidate:1 1 udp {HOST_PRIORITY} {host} {port} typ host"


def rewrite_candidates(sdp: str, port: int, host: str = RELAY_HOST) -> str:
    """``sdp`` with every candidate of every media section replaced by ``host:port``."""
    out: list[str] = []
    in_media = False
    for line in sdp.splitlines():
        if line.startswith("a=candidate:") or line == "a=end-of-candidates":
            continue
        if line.startswith("m="):
            if in_media:
                out += [relay_candidate(port, host), "a=end-of-candidates"]
            in_media = True
        elif line.startswith("c=IN IP4 ") and in_media:
            line = f"c=IN IP4 {host}"
        out.append(line)
    if in_media:
        out += [relay_candidate(port, host), "a=end-of-candidates"]
    return "\r\n".join(out) + "\r\n"
