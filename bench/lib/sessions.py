"""One benchmark session = one controller on one trace under one link setting; and their log.

A :class:`SessionTask` is plain data (it crosses process and Ray boundaries); :func:`run_task`
runs it and returns a JSON-ready record. Finished records are appended, one line each, to
``sessions.jsonl``; :class:`SessionLog` reads that file back on a restart so that finished
sessions are not run again. A session's key names everything that changes its outcome:
controller, trace file, link setting, duration cap and seed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Sessions are one trace period long unless capped, and never longer than this
#: (the same rule as ``loki emulate``).
DEFAULT_DURATION_CAP_S = 600.0
#: ``--sweep``: base RTTs of 20, 80 and 200 ms (one-way delay each way) ...
SWEEP_DELAYS_MS = (10, 40, 100)
#: ... and a shallow and a deep drop-tail queue (about 0.1 s and 1 s at 3 Mbps in ~1.26 kB
#: packets), against mahimahi's default unlimited queue.
SWEEP_QUEUES_PACKETS = (30, 300)
SESSIONS_FILE = "sessions.jsonl"
#: Traces kept loaded per worker process (tasks arrive grouped by trace).
TRACE_CACHE_SIZE = 4
REPO_ROOT = Path(__file__).resolve().parents[2]
#: What a session's outcome depends on, besides its key: emulator, controllers, models, traces.
CODE_GLOBS = (
    "loki/**/*.py",
    "gcc/**/*.py",
    "fusion/**/*.py",
    "traces/**/*.py",
    "loki/data/*",
    "loki/models/**/*",
)


@dataclass(frozen=True)
class LinkSetting:
    """Link conditions shared by every controller in a comparison."""

    delay_ms: int = 20
    queue_packets: int | None = None
    loss: float = 0.0

    @property
    def label(self) -> str:
        queue = "inf" if self.queue_packets is None else f"{self.queue_packets}pkt"
        return f"rtt{2 * self.delay_ms}ms-q{queue}-loss{self.loss:g}"


@dataclass(frozen=True)
class SessionTask:
    controller: str
    trace_path: str
    family: str
    link: LinkSetting
    duration_cap_s: float | None
    seed: int

    @property
    def key(self) -> str:
        return session_key(
            self.controller,
            self.trace_path,
            self.link,
            self.duration_cap_s,
            self.seed,
        )

    @property
    def pair_key(self) -> str:
        """The key without the controller: sessions with equal pair keys are paired."""
        return session_key("", self.trace_path, self.link, self.duration_cap_s, self.seed)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SessionTask:
        return cls(**{**d, "link": LinkSetting(**d["link"])})


def session_key(
    controller: str,
    trace_path: str,
    link: LinkSetting,
    duration_cap_s: float | None,
    seed: int,
) -> str:
    parts = [
        controller,
        trace_path,
        link.delay_ms,
        link.queue_packets,
        link.loss,
        duration_cap_s,
        seed,
    ]
    return json.dumps(parts, separators=(",", ":"))


def link_grid(
    delays_ms: Sequence[int], queues_packets: Sequence[int | None], losses: Sequence[float]
) -> list[LinkSetting]:
    """Every combination of the given delays, queue limits and loss rates."""
    return [
        LinkSetting(d, q, loss)
        for d, q, loss in itertools.product(delays_ms, queues_packets, losses)
    ]


def subsample_per_family(
    paths_by_family: dict[str, list[Path]], max_per_family: int | None, seed: int
) -> dict[str, list[Path]]:
    """At most ``max_per_family`` traces of each family, drawn without replacement.

    Each family's draw is seeded from the seed and the family's name, so adding a folder to
    the benchmark does not change which traces the other families contribute.
    """
    if max_per_family is None:
        return paths_by_family
    out = {}
    for family, paths in paths_by_family.items():
        if len(paths) <= max_per_family:
            out[family] = list(paths)
            continue
        rng = np.random.default_rng([seed, zlib.crc32(family.encode())])
        picked = rng.choice(len(paths), size=max_per_family, replace=False)
        out[family] = [paths[i] for i in sorted(picked)]
    return out


def make_tasks(
    controllers: Sequence[str],
    paths_by_family: dict[str, list[Path]],
    links: Sequence[LinkSetting],
    duration_cap_s: float | None,
    seed: int,
) -> list[SessionTask]:
    """All sessions, grouped by trace then link so a worker's trace cache stays warm."""
    tasks = []
    for family in sorted(paths_by_family):
        for path in paths_by_family[family]:
            for link in links:
                for name in controllers:
                    tasks.append(SessionTask(name, str(path), family, link, duration_cap_s, seed))
    return tasks


@lru_cache(maxsize=TRACE_CACHE_SIZE)
def _load(path: str):
    from traces.load import load_trace

    return load_trace(path)


def session_duration_s(trace_period_ms: int, duration_cap_s: float | None) -> float:
    """One trace period, capped by the user's cap and by :data:`DEFAULT_DURATION_CAP_S`."""
    cap = DEFAULT_DURATION_CAP_S if duration_cap_s is None else duration_cap_s
    return min(trace_period_ms / 1000.0, cap)


def build_session(task: SessionTask):
    """The emulator session a task describes (not yet run)."""
    from loki.controllers import make_controller
    from loki.emu.session import LinkConfig, Session, SessionConfig

    trace = _load(task.trace_path)
    link = LinkConfig(
        trace=trace,
        delay_ms=task.link.delay_ms,
        queue_packets=task.link.queue_packets,
        loss=task.link.loss,
    )
    cfg = SessionConfig(
        duration_s=session_duration_s(trace.period_ms, task.duration_cap_s), seed=task.seed
    )
    return Session(make_controller(task.controller, trace=trace), link, cfg)


def code_fingerprint(root: Path = REPO_ROOT) -> str:
    """A short hash of the code and models sessions run on.

    Not part of a session's key (a resumed benchmark keeps its sessions across an unrelated
    edit), but kept in each record so that a resume can warn when the logged sessions were run
    by different code.
    """
    digest = hashlib.sha256()
    files = sorted({p for g in CODE_GLOBS for p in root.glob(g) if p.is_file()})
    for p in files:
        digest.update(str(p.relative_to(root)).encode())
        digest.update(p.read_bytes())
    return digest.hexdigest()[:12]


def run_task(task: SessionTask | dict, code: str = "") -> dict:
    """Run one session; the record holds the task, its QoE and the wall time it took."""
    if isinstance(task, dict):
        task = SessionTask.from_dict(task)
    session = build_session(task)
    start_s = time.perf_counter()  # the benchmark measures itself; the emulator never does
    result = session.run()
    wall_s = time.perf_counter() - start_s
    return {
        "key": task.key,
        "task": task.to_dict(),
        "trace_name": session.link.trace.name,
        "qoe": result.qoe.to_dict(),
        "wall_s": wall_s,
        "code": code,
    }


def run_timeline(task: SessionTask | dict) -> tuple[dict, dict[str, list[float]]]:
    """Run a session again for its per-second timeline (sessions are deterministic per seed)."""
    if isinstance(task, dict):
        task = SessionTask.from_dict(task)
    result = build_session(task).run()
    return result.qoe.to_dict(), {k: v.tolist() for k, v in result.timeline.items()}


class SessionLog:
    """Append-only JSONL of finished sessions, safe to interrupt at any point.

    A line is written in one ``write`` and flushed; a crash can at worst leave a partial last
    line, which opening the log removes (so the next append starts on a fresh line).
    """

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / SESSIONS_FILE
        self.records: dict[str, dict] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):  # a torn last line from an interrupted run
            write_atomic(self.path, data[:end])
        for line in data[:end].splitlines():
            if line.strip():
                rec = json.loads(line)
                self.records[rec["key"]] = rec

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records[record["key"]] = record

    def compact(self) -> None:
        """Rewrite the log with one line per session (a rerun appends its new record; the
        last record of a key is the one that counts)."""
        lines = "".join(
            json.dumps(r, separators=(",", ":"), allow_nan=True) + "\n"
            for r in self.records.values()
        )
        write_atomic(self.path, lines)

    def select(self, tasks: Iterable[SessionTask]) -> list[dict]:
        """The records of ``tasks`` that are finished, in task order."""
        return [self.records[t.key] for t in tasks if t.key in self.records]


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside ``path`` and rename: readers see old or new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
