"""Checked argument types shared by every ``loki`` subcommand, so bad values fail the same way."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def number(kind: type, ok: Callable[[Any], bool], what: str) -> Callable[[str], Any]:
    """An argparse type that converts with ``kind`` and checks ``ok``, naming what it wants."""

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


positive_int = number(int, lambda v: v > 0, "a positive integer")
nonneg_int = number(int, lambda v: v >= 0, "an integer >= 0")
probability = number(float, lambda v: 0.0 <= v < 1.0, "a probability in [0, 1)")
positive_float = number(float, lambda v: 0 < v < float("inf"), "a positive number")
