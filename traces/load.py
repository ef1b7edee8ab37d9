"""One entry point for trace files: pick the reader, find traces in a folder, name the family.

Dispatch by suffix: ``.mahi``, ``.up``, ``.down`` are mahimahi; ``.csv`` is a cooked series;
``.json`` is OpenNetLab. Anything else (``.txt``, no suffix, or a dotted name such as
``Driving_B_2019.12.14_10.16.30``) is sniffed from its first non-blank line: ``{`` is JSON, two
fields are a cooked series (Pensieve's cooked files have no suffix), one field is mahimahi.

Every loaded trace's ``meta`` has ``source``, ``format`` and ``family`` (see
:func:`trace_family`), plus what its reader adds (see each reader's module).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from traces.cooked import read_cooked_trace
from traces.mahimahi import read_mahimahi
from traces.opennetlab import read_opennetlab
from traces.trace import Trace, TraceError

MAHIMAHI = "mahimahi"
COOKED = "cooked"
OPENNETLAB = "opennetlab"
FORMATS = (MAHIMAHI, COOKED, OPENNETLAB)

#: Suffixes that decide the format without reading the file.
SUFFIX_FORMAT = {
    ".mahi": MAHIMAHI,
    ".up": MAHIMAHI,
    ".down": MAHIMAHI,
    ".csv": COOKED,
    ".json": OPENNETLAB,
}
#: Suffixes that are dropped from the trace name (``.up``/``.down`` are kept: they say which
#: direction the trace is).
NAME_SUFFIXES = (".mahi", ".csv", ".json", ".txt")
#: Suffixes that find_traces() considers, per format (sniffed files are never discovered).
DISCOVERY_SUFFIXES = {
    MAHIMAHI: (".mahi", ".up", ".down"),
    COOKED: (".csv",),
    OPENNETLAB: (".json",),
}
#: Files of the shared layout that are metadata, not traces.
NOT_TRACES = frozenset({"SOURCE.json"})
#: Sub-folders of a shared set that hold other formats of the set's own traces.
FORMAT_FOLDERS = frozenset({"cooked", "json"})
#: Bytes read to sniff an unknown file's format.
SNIFF_BYTES = 4096


def trace_format(path: str | os.PathLike[str]) -> str:
    """The format of ``path``: from its suffix, else from its first non-blank line."""
    p = Path(path)
    fmt = SUFFIX_FORMAT.get(p.suffix.lower())
    if fmt is not None:
        return fmt
    with p.open("rb") as f:
        head = f.read(SNIFF_BYTES).decode("utf-8", errors="replace")
    first = next((line.strip() for line in head.splitlines() if line.strip()), "")
    if not first:
        raise TraceError(f"{p}: line 1: empty trace (no timestamps)")
    if first.startswith("{"):
        return OPENNETLAB
    return COOKED if len(first.replace(",", " ").split()) >= 2 else MAHIMAHI


def trace_name(path: str | os.PathLike[str]) -> str:
    """File name without a format suffix (``x.mahi`` -> ``x``, ``x.up`` stays ``x.up``)."""
    p = Path(path)
    return p.stem if p.suffix.lower() in NAME_SUFFIXES else p.name


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read any supported trace file into a :class:`Trace`.

    Raises FileNotFoundError for a missing path and TraceError for a malformed file.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such trace file: {p}")
    if p.is_dir():
        raise TraceError(f"{p} is a folder; use find_traces() to list the traces in it")
    fmt = trace_format(p)
    name = trace_name(p)
    if fmt == MAHIMAHI:
        trace = read_mahimahi(p, name)
    elif fmt == COOKED:
        trace = read_cooked_trace(p, name)
    else:
        trace = read_opennetlab(p, name)
    trace.meta["family"] = trace_family(p)
    return trace


def find_traces(
    root: str | os.PathLike[str],
    *,
    formats: Iterable[str] | None = None,
    recursive: bool = True,
) -> list[Path]:
    """Trace files under ``root`` (or ``root`` itself if it is a file), sorted by path.

    By default mahimahi files (``.mahi``/``.up``/``.down``) are returned and, only when there
    are none, cooked ``.csv`` and OpenNetLab ``.json`` files: so a shared set (or the whole
    shared folder) yields its ``.mahi`` files and not also their ``cooked/`` and ``json/``
    copies. ``formats`` (names from :data:`FORMATS`) asks for given formats instead. Hidden
    files and folders and ``SOURCE.json`` are skipped.
    """
    r = Path(root)
    if not r.exists():
        raise FileNotFoundError(f"no such trace file or folder: {r}")
    if r.is_file():
        return [r]
    wanted = tuple(formats) if formats is not None else None
    unknown = set(wanted or ()) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown trace format(s) {sorted(unknown)}; known: {FORMATS}")
    found: dict[str, list[Path]] = {fmt: [] for fmt in FORMATS}
    for p in sorted(r.rglob("*") if recursive else r.iterdir()):
        rel = p.relative_to(r)
        if any(part.startswith(".") for part in rel.parts) or p.name in NOT_TRACES:
            continue
        for fmt, suffixes in DISCOVERY_SUFFIXES.items():
            if p.suffix.lower() in suffixes and p.is_file():
                found[fmt].append(p)
    if wanted is None:
        paths = found[MAHIMAHI] or sorted(found[COOKED] + found[OPENNETLAB])
        wanted = FORMATS
    else:
        paths = sorted(p for fmt in wanted for p in found[fmt])
    if not paths:
        looked = ", ".join(s for fmt in wanted for s in DISCOVERY_SUFFIXES[fmt])
        raise TraceError(f"no trace files ({looked}) under {r}")
    return paths


def trace_family(path: str | os.PathLike[str]) -> str:
    """The family a trace belongs to: the shared set's folder name (``ireland_5g_ucc``).

    That is the nearest enclosing folder with a ``SOURCE.json``; failing that, the folder the
    file is in, skipping a ``cooked``/``json`` format folder.
    """
    p = Path(path).resolve()
    for parent in p.parents:
        if (parent / "SOURCE.json").is_file():
            return parent.name
    parent = p.parent
    if parent.name in FORMAT_FOLDERS and parent.parent != parent:
        parent = parent.parent
    return parent.name
