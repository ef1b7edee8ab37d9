"""Calling compiled (numba) functions thousands of times per emulated minute, cheaply.

numba's dispatcher types every argument on every call (about 50 ns per array argument) before
it picks the compiled code. The emulator's hot calls pass the same layout of arrays each time,
so :func:`entry_point` resolves the compiled code once, for the types of a sample call, and the
caller calls that directly until its arrays change (it resolves again then).

Resolving is itself slow (numba's ``typeof`` and ``Dispatcher.compile`` take about half a
millisecond for a call with twenty arrays) and a session resolves again each time a table
grows, a dozen times in a one-minute session. So resolutions are remembered per dispatcher and
argument layout: the numba type of an array is a function of its dtype, dimensions, contiguity,
writeability and alignment, and that of a scalar of its Python type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numba import typeof

#: Scalars whose numba type is a function of their Python type (ints: within int64).
_PLAIN_SCALARS = (bool, float, np.bool_, np.int64, np.float64)
_INT64_MIN = -(2**63)
_INT64_END = 2**63
#: Resolved compiled code by dispatcher and argument layouts (see the module docstring).
_RESOLVED: dict[tuple[Any, ...], Callable[..., Any]] = {}


def _layout_key(value: Any) -> object:
    """What numba's type of ``value`` depends on (cheaper to build than the type itself), or
    None for a value this does not cover."""
    kind = type(value)
    if kind is np.ndarray:
        flags = value.flags
        return (
            value.dtype,
            value.ndim,
            flags.c_contiguous,
            flags.f_contiguous,
            flags.writeable,
            flags.aligned,
        )
    if kind is int:
        return int if _INT64_MIN <= value < _INT64_END else None
    return kind if kind in _PLAIN_SCALARS else None


def entry_point(dispatcher: Any, sample_args: Sequence[object]) -> Callable[..., Any]:
    """The compiled code ``dispatcher`` runs for arguments typed like ``sample_args``.

    Loads it from numba's cache (or compiles it) without running it. Falls back to the
    dispatcher itself if the types cannot be resolved.
    """
    layouts = tuple(map(_layout_key, sample_args))
    key = None if any(k is None for k in layouts) else (dispatcher, *layouts)
    resolved = None if key is None else _RESOLVED.get(key)
    if resolved is None:
        try:
            resolved = dispatcher.compile(tuple(typeof(a) for a in sample_args))
        except Exception:
            return dispatcher
        if key is not None:
            _RESOLVED[key] = resolved
    return resolved
