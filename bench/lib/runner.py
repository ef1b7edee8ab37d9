"""Run a QoE benchmark end to end: check the inputs, run the missing sessions, write the outputs.

Sessions run one per task, on local cores (a process pool) or on a Ray cluster. Each finished
session is appended to ``sessions.jsonl`` at once, so an interrupted benchmark resumes where it
stopped. ``results.json``, ``report.md`` and the plots are written only once every session is
done, each atomically, so the output folder never holds a half-written or stale mix.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.lib import plots, summary
from bench.lib.sessions import (
    SWEEP_DELAYS_MS,
    SWEEP_QUEUES_PACKETS,
    LinkSetting,
    SessionLog,
    SessionTask,
    code_fingerprint,
    link_grid,
    make_tasks,
    run_task,
    run_timeline,
    subsample_per_family,
    write_atomic,
)
from loki.stats import DEFAULT_RESAMPLES

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
DEFAULT_DELAY_MS = 20
RAY_INSTALL_HINT = "pip install 'ray[default]'"
#: Failed sessions whose traceback is printed in full; the rest are counted.
FAILURES_SHOWN = 3


class BenchError(Exception):
    """A benchmark that cannot run or did not finish; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class BenchOptions:
    traces: list[Path]
    controllers: list[str]
    out: Path
    delays_ms: list[int] | None = None
    queues_packets: list[int | None] | None = None
    losses: list[float] = field(default_factory=lambda: [0.0])
    duration_s: float | None = None
    sweep: bool = False
    max_traces_per_family: int | None = None
    seed: int = 0
    workers: int = 1
    ray_address: str | None = None
    baseline: str = "gcc"
    resamples: int = DEFAULT_RESAMPLES
    worst: int = 3
    plots: bool = True
    progress: bool = True
    #: Run again the finished sessions that other code or models ran (default: keep, warn).
    rerun_stale: bool = False

    def links(self) -> list[LinkSetting]:
        if self.sweep:
            if self.delays_ms is not None or self.queues_packets is not None:
                raise BenchError("--sweep chooses the delays and queues; drop --delay-ms/--queue")
            return link_grid(SWEEP_DELAYS_MS, SWEEP_QUEUES_PACKETS, self.losses)
        return link_grid(
            self.delays_ms or [DEFAULT_DELAY_MS], self.queues_packets or [None], self.losses
        )


def check_controllers(names: Sequence[str]) -> None:
    """Refuse an empty list, duplicates and names the registry does not know."""
    from loki.controllers import make_controller
    from traces.builtin import get_builtin

    if not names:
        raise BenchError("--controllers needs at least one name")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BenchError(f"controller listed twice: {', '.join(dupes)}")
    probe = get_builtin("const-2.5mbps")
    for name in names:
        try:
            make_controller(name, trace=probe)
        except ValueError as e:
            raise BenchError(str(e)) from None


def discover_traces(dirs: Sequence[Path]) -> dict[str, list[Path]]:
    """Trace files under each folder, grouped by family; an empty or missing folder is an error."""
    from traces.load import find_traces, trace_family

    by_family: dict[str, list[Path]] = {}
    seen: set[Path] = set()
    for d in dirs:
        try:
            paths = find_traces(d)
        except (FileNotFoundError, ValueError) as e:  # TraceError is a ValueError
            raise BenchError(f"--traces {d}: {e}") from None
        for p in paths:
            p = p.resolve()
            if p not in seen:
                seen.add(p)
                by_family.setdefault(trace_family(p), []).append(p)
    return by_family


def check_traces(by_family: dict[str, list[Path]]) -> None:
    """Load every trace once before any session runs: a malformed one is one error naming its
    file and line, not a failed session per controller after minutes of work."""
    from traces.load import load_trace
    from traces.trace import TraceError

    for paths in by_family.values():
        for p in paths:
            try:
                load_trace(p)
            except (TraceError, OSError) as e:
                raise BenchError(f"--traces: {e}") from None


def run(opts: BenchOptions, echo: Callable[[str], None] | None = None) -> dict:
    """Run the benchmark described by ``opts``; returns the results that went to results.json."""
    echo = echo or (lambda msg: print(msg, file=sys.stderr))
    check_controllers(opts.controllers)
    links = opts.links()
    by_family = subsample_per_family(
        discover_traces(opts.traces), opts.max_traces_per_family, opts.seed
    )
    check_traces(by_family)
    tasks = make_tasks(opts.controllers, by_family, links, opts.duration_s, opts.seed)
    if opts.ray_address is not None:
        _import_ray()  # fail before any work if Ray is missing
    opts.out.mkdir(parents=True, exist_ok=True)
    log = SessionLog(opts.out)
    code = code_fingerprint()
    stale = {r["key"] for r in log.select(tasks) if r.get("code") != code}
    if stale and opts.rerun_stale:
        echo(
            f"bench: {len(stale)} finished sessions in {log.path} were run by different code or "
            "models; running them again (--rerun-stale)"
        )
    elif stale:
        echo(
            f"bench: warning: {len(stale)} finished sessions in {log.path} were run by different "
            "code or models; they are kept, not rerun. Use --rerun-stale (or a fresh --out) to "
            "run them again."
        )
    todo = [t for t in tasks if t.key not in log or (opts.rerun_stale and t.key in stale)]
    n_traces = sum(len(v) for v in by_family.values())
    echo(
        f"bench: {len(opts.controllers)} controllers x {n_traces} traces "
        f"({len(by_family)} families) x {len(links)} link settings = {len(tasks)} sessions; "
        f"{len(tasks) - len(todo)} already done, {len(todo)} to run"
        + (f" on Ray at {opts.ray_address}" if opts.ray_address else f" on {opts.workers} workers")
    )
    if opts.ray_address is not None:
        failures = _execute_ray(todo, code, opts.ray_address, log, len(tasks), opts.progress)
    else:
        failures = _execute_local(todo, code, opts.workers, log, len(tasks), opts.progress)
    if failures:
        for task, tb in failures[:FAILURES_SHOWN]:
            echo(f"bench: session failed: {task.controller} on {task.trace_path}:\n{tb}")
        raise BenchError(
            f"{len(failures)} of {len(todo)} sessions failed; the {len(todo) - len(failures)} "
            f"that finished are kept in {log.path}; rerun to retry the failed ones",
            status=1,
        )
    if stale and opts.rerun_stale:
        log.compact()
    records = log.select(tasks)
    results = summary.aggregate(
        records,
        opts.controllers,
        baseline=opts.baseline,
        seed=opts.seed,
        resamples=opts.resamples,
    )
    results = {"settings": _settings(opts, links, by_family), **results}
    figures: list[str] = []
    if opts.plots:
        worst = _worst_timelines(records, opts.controllers, opts.worst, opts.workers)
        figures = plots.write_all(records, opts.controllers, worst, opts.out)
    write_atomic(opts.out / RESULTS_FILE, json.dumps(summary.json_safe(results), indent=1) + "\n")
    write_atomic(opts.out / REPORT_FILE, summary.markdown_report(results, figures))
    echo(
        f"bench: wrote {opts.out / RESULTS_FILE}, {opts.out / REPORT_FILE} and {len(figures)} plots"
    )
    return results


def _settings(opts: BenchOptions, links: list[LinkSetting], by_family: dict) -> dict:
    return {
        "controllers": opts.controllers,
        "baseline": opts.baseline,
        "traces": [str(p) for p in opts.traces],
        "families": {f: len(p) for f, p in sorted(by_family.items())},
        "links": [{**asdict(link), "label": link.label} for link in links],
        "duration_cap_s": opts.duration_s,
        "max_traces_per_family": opts.max_traces_per_family,
        "seed": opts.seed,
        "resamples": opts.resamples,
    }


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        unit="session",
        desc="bench",
        disable=not enabled,
        mininterval=0.5,
        dynamic_ncols=True,
    )


def _execute_local(
    todo: list[SessionTask], code: str, workers: int, log: SessionLog, total: int, progress: bool
) -> list[tuple[SessionTask, str]]:
    failures: list[tuple[SessionTask, str]] = []
    with _progress_bar(total, total - len(todo), progress and bool(todo)) as bar:
        if workers == 1 or len(todo) <= 1:
            for task in todo:
                try:
                    log.append(run_task(task, code))
                except Exception:
                    failures.append((task, traceback.format_exc()))
                bar.update()
            return failures
        # spawn: workers start clean (no inherited threads or locks) on every platform.
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            futures = {pool.submit(run_task, t.to_dict(), code): t for t in todo}
            for fut in as_completed(futures):
                try:
                    log.append(fut.result())
                except Exception:
                    failures.append((futures[fut], traceback.format_exc()))
                bar.update()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    return failures


def _import_ray():
    try:
        import ray
    except ImportError:
        raise BenchError(
            f"--ray-address needs Ray, which is not installed: {RAY_INSTALL_HINT} "
            "(into the same Python environment on the driver and every cluster node)"
        ) from None
    return ray


def _execute_ray(
    todo: list[SessionTask], code: str, address: str, log: SessionLog, total: int, progress: bool
) -> list[tuple[SessionTask, str]]:
    """Run the sessions as Ray tasks, one CPU each.

    Every node needs this repository and the traces at the same paths as the driver, and the
    same Python environment: tasks import ``bench.lib`` from ``PYTHONPATH`` (set to the
    repository root here) and open trace files by their absolute paths.
    """
    ray = _import_ray()
    init_kwargs: dict = {
        "ignore_reinit_error": True,
        "runtime_env": {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}},
    }
    if address != "local":
        init_kwargs["address"] = address
    ray.init(**init_kwargs)
    remote_run = ray.remote(num_cpus=1)(run_task)
    failures: list[tuple[SessionTask, str]] = []
    with _progress_bar(total, total - len(todo), progress and bool(todo)) as bar:
        pending = {remote_run.remote(t.to_dict(), code): t for t in todo}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    log.append(ray.get(ref))
                except Exception:
                    failures.append((task, traceback.format_exc()))
                bar.update()
    return failures


def _worst_timelines(
    records: list[dict], controllers: Sequence[str], n: int, workers: int
) -> dict[str, list[tuple[dict, dict]]]:
    """Per controller, its ``n`` worst sessions run again for their timelines.

    Rerunning a handful of sessions is cheaper than keeping every session's timeline; the
    rerun must reproduce the logged QoE, which also checks that sessions are deterministic.
    """
    picks = summary.worst_sessions(records, controllers, n)
    flat = [(name, rec) for name, recs in picks.items() for rec in recs]
    if not flat:
        return {}
    tasks = [rec["task"] for _, rec in flat]
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(
            min(workers, len(tasks)), mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            reruns = list(pool.map(run_timeline, tasks))
    else:
        reruns = [run_timeline(t) for t in tasks]
    out: dict[str, list[tuple[dict, dict]]] = {name: [] for name in picks}
    for (name, rec), (qoe, timeline) in zip(flat, reruns, strict=True):
        if qoe["stall_rate"] != rec["qoe"]["stall_rate"]:
            print(
                f"bench: warning: rerun of {name} on {rec['trace_name']} gave stall rate "
                f"{qoe['stall_rate']:.4f}, logged {rec['qoe']['stall_rate']:.4f}: "
                "the session is not deterministic",
                file=sys.stderr,
            )
        out[name].append((rec, timeline))
    return out


def default_workers() -> int:
    return os.cpu_count() or 1
