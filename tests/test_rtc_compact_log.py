"""IntRows: the live session's per-frame logs, 8 bytes a value, whole rows under threads."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from rtc.compact_log import IntRows


def test_rows_come_back_as_tuples_and_columns() -> None:
    rows = IntRows(("t_us", "size", "key"))
    assert not rows and len(rows) == 0
    rows.append(10, 1_200, 1)
    rows.append(20, -5, 0)
    rows.append(2**62, 7, True)
    assert rows and len(rows) == 3
    assert rows.row(0) == (10, 1_200, 1) and rows.row(-1) == (2**62, 7, 1)
    assert list(rows) == [(10, 1_200, 1), (20, -5, 0), (2**62, 7, 1)]
    pairs = IntRows(("pts", "capture_us"))
    pairs.append(1, 100)
    pairs.append(2, 200)
    assert dict(pairs) == {1: 100, 2: 200}  # the session's capture-time lookup
    cols = rows.columns()
    assert cols["size"].tolist() == [1_200, -5, 7] and cols["t_us"].dtype == np.int64
    assert rows.to_numpy().shape == (3, 3)
    with pytest.raises(IndexError):
        rows.row(3)
    with pytest.raises(ValueError):
        rows.append(1, 2)


def test_a_row_costs_eight_bytes_a_field() -> None:
    """The reason it exists: a tuple of large Python ints costs about 6x this."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        rows = IntRows(("a", "b", "c", "d", "e", "f"))
        for i in range(20_000):
            rows.append(10**12 + i, 2**40 + i, i, 1_200 + i, i & 1, 10**6 + i)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert rows.nbytes == 20_000 * 6 * 8
    assert grown < 1.2 * rows.nbytes  # the array's spare capacity, nothing per row


def test_a_reader_never_sees_half_a_row_while_another_thread_appends() -> None:
    rows = IntRows(("i", "twice", "thrice"))
    n = 50_000

    def writer() -> None:
        for i in range(n):
            rows.append(i, 2 * i, 3 * i)

    t = threading.Thread(target=writer)
    t.start()
    while t.is_alive():
        table = rows.to_numpy()
        assert (table[:, 1] == 2 * table[:, 0]).all() and (table[:, 2] == 3 * table[:, 0]).all()
    t.join()
    assert len(rows) == n and rows.row(-1) == (n - 1, 2 * (n - 1), 3 * (n - 1))
