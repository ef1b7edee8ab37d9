"""Per-frame and per-packet logs that cost 8 bytes a value: :class:`IntRows`.

A live session keeps a record of every frame in four places (capture time, the encoder's
output, the frame buffer's output, the decoder's output) and of every target change, for the
QoE and the JSON figures at the end. As tuples or objects of Python ints that is about 800
bytes a frame (a tuple or slotted object, and 32 bytes for each int above 256), 1.4 MB a minute
at 30 fps: measured with tracemalloc, it was all of a 10-minute soak's steady memory growth.
The same integers in one ``array('q')`` cost 8 bytes each, a sixth of that or less, and nothing
is dropped.

Rows may be appended from another thread (the encoder's callback runs in aiortc's executor):
each append extends the array under a lock, so a reader never sees half a row.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Iterator

import numpy as np


class IntRows:
    """Rows of ``len(fields)`` int64 values, appended one at a time and read back as rows or
    numpy columns. Booleans are stored as 0/1; a value that may be missing needs a sentinel
    chosen by the caller (an int64 has no None)."""

    __slots__ = ("_data", "_lock", "_width", "fields")

    def __init__(self, fields: tuple[str, ...]) -> None:
        if not fields:
            raise ValueError("IntRows needs at least one field")
        self.fields = fields
        self._width = len(fields)
        self._data = array("q")
        self._lock = threading.Lock()

    def append(self, *values: int) -> None:
        if len(values) != self._width:
            raise ValueError(f"IntRows.append: {len(values)} values for {self._width} fields")
        with self._lock:
            self._data.extend(values)

    def __len__(self) -> int:
        return len(self._data) // self._width

    def __bool__(self) -> bool:
        return len(self._data) >= self._width

    def row(self, index: int) -> tuple[int, ...]:
        """Row ``index`` (negative counts from the end), as a tuple of ints."""
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"IntRows.row: {index} out of range for {n} rows")
        start = index * self._width
        return tuple(self._data[start : start + self._width])

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        for i in range(len(self)):
            yield self.row(i)

    def to_numpy(self) -> np.ndarray:
        """All complete rows as an (n, width) int64 array (a copy)."""
        with self._lock:
            flat = np.array(self._data, dtype=np.int64)
        n = flat.shape[0] // self._width
        return flat[: n * self._width].reshape(n, self._width)

    def columns(self) -> dict[str, np.ndarray]:
        """Each field as its own int64 array (copies, consistent with one another)."""
        table = self.to_numpy()
        return {name: table[:, i].copy() for i, name in enumerate(self.fields)}

    @property
    def nbytes(self) -> int:
        """Bytes the values take (the array's allocation may be slightly larger)."""
        return len(self._data) * self._data.itemsize
