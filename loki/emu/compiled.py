"""Calling compiled (numba) functions thousands of times per emulated minute, cheaply.

numba's dispatcher types every argument on every call (about 50 ns per array argument) before
it picks the compiled code. The emulator's hot calls pass the same layout of arrays each time,
so :func:`entry_point` resolves the compiled code once, for the types of a sample call, and the
caller calls that directly until its arrays change (it resolves again then).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from numba import typeof


def entry_point(dispatcher: Any, sample_args: Sequence[object]) -> Callable[..., Any]:
    """The compiled code ``dispatcher`` runs for arguments typed like ``sample_args``.

    Loads it from numba's cache (or compiles it) without running it. Falls back to the
    dispatcher itself if the types cannot be resolved.
    """
    try:
        return dispatcher.compile(tuple(typeof(a) for a in sample_args))
    except Exception:
        return dispatcher
