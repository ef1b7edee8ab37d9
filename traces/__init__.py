"""Trace formats, validation and synthetic generators for trace-driven links.

Every source becomes a :class:`Trace` (delivery-opportunity milliseconds, mahimahi style):
``mahimahi`` (read/write), ``cooked`` (Pensieve throughput series), ``opennetlab`` (challenge
JSON), ``generators`` and ``builtin`` (synthetic links), all converting rates through
``rate_steps``; ``load`` picks the reader for a path and discovers traces in folders.
"""

from traces.builtin import DEFAULT_BUILTIN, builtin_names, get_builtin
from traces.load import find_traces, load_trace, trace_family
from traces.trace import BYTES_PER_OPPORTUNITY, Trace, TraceError

__all__ = [
    "BYTES_PER_OPPORTUNITY",
    "DEFAULT_BUILTIN",
    "Trace",
    "TraceError",
    "builtin_names",
    "find_traces",
    "get_builtin",
    "load_trace",
    "trace_family",
]
