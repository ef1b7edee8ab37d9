"""The relay's packet log: streamed to disk in chunks, read back whole as int64 columns."""

from __future__ import annotations

import numpy as np

from rtc.relay import LOG_CHUNK_ROWS, PacketLog, load_packet_log


def test_packet_log_streams_to_disk_and_reads_back_every_row(tmp_path) -> None:
    path = tmp_path / "packets.npz"
    log = PacketLog(path)
    n = 2 * LOG_CHUNK_ROWS + 123
    for i in range(n):
        out = -1 if i % 7 == 0 else 10**12 + i + 25_000
        log.add(10**12 + i, out, 1_228, 0xFFFF_FFFF, 96, i % 65_536, i)
        # Never more than one chunk in memory, however long the session.
        assert len(log._chunk) < LOG_CHUNK_ROWS * len(PacketLog.FIELDS)
    log.save()
    got = load_packet_log(path)
    assert not path.with_name(path.name + ".rows").exists()
    assert set(got) == set(PacketLog.FIELDS) and log.rows == n
    assert got["in_us"].tolist() == [10**12 + i for i in range(n)]
    assert (got["out_us"][::7] == -1).all() and got["out_us"][1] == 10**12 + 1 + 25_000
    assert (got["ssrc"] == 0xFFFF_FFFF).all() and got["twcc_seq"].dtype == np.int64
    assert got["seq"][-1] == (n - 1) % 65_536


def test_an_empty_log_saves_empty_columns(tmp_path) -> None:
    log = PacketLog(tmp_path / "p.npz")
    log.save()
    got = load_packet_log(tmp_path / "p.npz")
    assert all(got[f].shape == (0,) for f in PacketLog.FIELDS)
