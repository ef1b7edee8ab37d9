"""Trace formats, validation and synthetic generators for trace-driven links."""

from traces.trace import BYTES_PER_OPPORTUNITY, Trace, TraceError

__all__ = ["BYTES_PER_OPPORTUNITY", "Trace", "TraceError"]
