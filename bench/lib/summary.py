"""Fold per-session records into the benchmark's tables: per controller, per family, overall.

Aggregates across sessions follow Pantheon's convention: a delay figure of a group is the mean
over its sessions of each session's percentile (``frame_delay_p95_ms`` = mean of per-session
p95 frame delays), not a percentile of all frames pooled, so every session weighs the same
whatever its length or frame rate. The stall-rate tail (``stall_rate_p95``) is the 95th
percentile of per-session stall rates: the share of sessions that stall badly, Loki's headline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import PurePath

import numpy as np

from bench.lib.sessions import LinkSetting, SessionTask
from loki.stats import CONFIDENCE, derive_seed, paired_relative_change

#: Aggregate name -> (per-session QoE field, statistic over sessions).
AGGREGATES: dict[str, tuple[str, str]] = {
    "bitrate_kbps_mean": ("bitrate_kbps", "mean"),
    "utilization_mean": ("utilization", "mean"),
    "stall_rate_mean": ("stall_rate", "mean"),
    "stall_rate_p95": ("stall_rate", "p95"),
    "freezes_per_min_mean": ("freezes_per_min", "mean"),
    "frame_delay_p50_ms": ("frame_delay_p50_ms", "mean"),
    "frame_delay_p95_ms": ("frame_delay_p95_ms", "mean"),
    "loss_rate_mean": ("loss_rate", "mean"),
    "score_mmsys21_mean": ("score_mmsys21", "mean"),
}
#: Below this many pairs a bootstrap interval is too coarse to trust (3 pairs have only 10
#: distinct resamples); the report says so next to the count.
MIN_PAIRS_FOR_CI = 10
#: Aggregates compared against the baseline with paired bootstrap intervals.
COMPARED = ("stall_rate_mean", "stall_rate_p95", "bitrate_kbps_mean", "frame_delay_p95_ms")


def _reduce(values: np.ndarray, statistic: str) -> float:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return float("nan")
    return float(np.mean(v) if statistic == "mean" else np.percentile(v, 95))


def summarize(records: Sequence[dict]) -> dict:
    """The aggregate figures of a group of sessions (one controller, one family or all)."""
    out: dict = {"sessions": len(records)}
    for name, (qfield, statistic) in AGGREGATES.items():
        values = np.array([r["qoe"][qfield] for r in records], dtype=np.float64)
        out[name] = _reduce(values, statistic)
    return out


def _pair_key(rec: dict) -> str:
    return SessionTask.from_dict(rec["task"]).pair_key


def _groups(records: Sequence[dict]) -> dict[str, dict[str, list[dict]]]:
    """Records split by family and, when there are several, by link setting."""
    fam: dict[str, list[dict]] = {}
    links: dict[str, list[dict]] = {}
    for r in records:
        fam.setdefault(r["task"]["family"], []).append(r)
        link = r["task"]["link"]
        label = _link_label(link)
        links.setdefault(label, []).append(r)
    out = {"families": dict(sorted(fam.items()))}
    if len(links) > 1:
        out["links"] = links
    return out


def _link_label(link: dict) -> str:
    return LinkSetting(**link).label


def compare(
    candidate: Sequence[dict],
    baseline: Sequence[dict],
    *,
    seed: int,
    resamples: int,
    labels: tuple[str, ...],
) -> dict:
    """Paired relative changes of :data:`COMPARED`, pairing sessions by trace and link."""
    base = {_pair_key(r): r for r in baseline}
    pairs = [(r, base[k]) for r in candidate if (k := _pair_key(r)) in base]
    out = {}
    for name in COMPARED:
        qfield, statistic = AGGREGATES[name]
        c = np.array([p[0]["qoe"][qfield] for p in pairs], dtype=np.float64)
        b = np.array([p[1]["qoe"][qfield] for p in pairs], dtype=np.float64)
        change = paired_relative_change(
            c, b, statistic, resamples=resamples, seed=derive_seed(seed, *labels, name)
        )
        out[name] = change.to_dict()
    return out


def aggregate(
    records: Sequence[dict],
    controllers: Sequence[str],
    *,
    baseline: str = "gcc",
    seed: int = 0,
    resamples: int = 2000,
) -> dict:
    """results.json's body: per controller overall/family/link aggregates, and paired changes."""
    by_ctl: dict[str, list[dict]] = {c: [] for c in controllers}
    for r in records:
        by_ctl.setdefault(r["task"]["controller"], []).append(r)
    results: dict = {"controllers": {}, "vs_baseline": {}}
    for name, recs in by_ctl.items():
        entry = {"overall": summarize(recs)}
        for kind, groups in _groups(recs).items():
            entry[kind] = {g: summarize(rs) for g, rs in groups.items()}
        results["controllers"][name] = entry
    if baseline not in by_ctl:
        results["vs_baseline_note"] = f"baseline {baseline!r} was not run; no paired comparison"
        return results
    base = by_ctl[baseline]
    base_groups = _groups(base)
    for name, recs in by_ctl.items():
        if name == baseline:
            continue
        entry = {
            "overall": compare(recs, base, seed=seed, resamples=resamples, labels=(name, "overall"))
        }
        for kind, groups in _groups(recs).items():
            entry[kind] = {
                g: compare(
                    rs,
                    base_groups.get(kind, {}).get(g, []),
                    seed=seed,
                    resamples=resamples,
                    labels=(name, kind, g),
                )
                for g, rs in groups.items()
            }
        results["vs_baseline"][name] = entry
    results["baseline"] = baseline
    return results


def worst_sessions(
    records: Sequence[dict], controllers: Sequence[str], n: int
) -> dict[str, list[dict]]:
    """Each controller's ``n`` worst sessions: highest stall rate, then highest p95 delay."""

    def badness(r: dict) -> tuple[float, float]:
        fd = r["qoe"]["frame_delay_p95_ms"]
        return (r["qoe"]["stall_rate"], -math.inf if math.isnan(fd) else fd)

    out = {}
    for name in controllers:
        recs = [r for r in records if r["task"]["controller"] == name]
        out[name] = sorted(recs, key=badness, reverse=True)[:n] if n > 0 else []
    return out


def json_safe(obj):
    """NaN and infinities become null: results.json stays standard JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


# -- report.md ---------------------------------------------------------------------------------

#: Table columns: aggregate, header, format.
TABLE_COLUMNS = (
    ("sessions", "sessions", "{:d}"),
    ("bitrate_kbps_mean", "bitrate kbps", "{:.0f}"),
    ("utilization_mean", "util", "{:.2f}"),
    ("stall_rate_mean", "stall mean", "{:.4f}"),
    ("stall_rate_p95", "stall p95", "{:.4f}"),
    ("freezes_per_min_mean", "freezes/min", "{:.2f}"),
    ("frame_delay_p50_ms", "frame delay p50 ms", "{:.0f}"),
    ("frame_delay_p95_ms", "frame delay p95 ms", "{:.0f}"),
    ("loss_rate_mean", "loss", "{:.4f}"),
    ("score_mmsys21_mean", "MMSys'21 score", "{:.1f}"),
)


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return fmt.format(value)


def _table(rows: list[tuple[str, dict]], first: str) -> list[str]:
    head = [first, *(h for _, h, _ in TABLE_COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, agg in rows:
        cells = [_cell(agg.get(k), f) for k, _, f in TABLE_COLUMNS]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    return lines


def format_change(change: dict) -> str:
    """``-13.9 % [-20.1, -7.5]``, in bold when the interval excludes zero."""
    est, lo, hi = change.get("estimate"), change.get("ci_low"), change.get("ci_high")
    if change.get("pairs", 0) == 0:
        return "n/a"

    def pct(v) -> str:
        if v is None or math.isnan(v):
            return "n/a"
        return f"{100 * v:+.1f}" if math.isfinite(v) else "+inf"

    text = f"{pct(est)} % [{pct(lo)}, {pct(hi)}]"
    return f"**{text}**" if change.get("significant") else text


def _change_table(rows: list[tuple[str, dict]], first: str) -> list[str]:
    head = [first, "pairs", *COMPARED]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, changes in rows:
        pairs = next(iter(changes.values())).get("pairs", 0)
        cells = [format_change(changes[m]) for m in COMPARED]
        count = f"{pairs} (too few for an interval)" if pairs < MIN_PAIRS_FOR_CI else str(pairs)
        lines.append("| " + " | ".join([label, count, *cells]) + " |")
    return lines


def markdown_report(results: dict, figures: Sequence[str]) -> str:
    """report.md: settings, the tables of results.json, and the plots."""
    s = results["settings"]
    ctl = results["controllers"]
    links = ", ".join(link["label"] for link in s["links"])
    fams = ", ".join(f"{f} ({n})" for f, n in s["families"].items())
    cap = (
        "one trace period, at most 600 s"
        if s["duration_cap_s"] is None
        else (f"one trace period, at most {s['duration_cap_s']:g} s")
    )
    out = [
        "# QoE benchmark",
        "",
        "Generated by `bench/qoe.py` from `sessions.jsonl`; every figure below is in "
        "`results.json`.",
        "",
        f"- controllers: {', '.join(s['controllers'])}",
        f"- trace families (traces): {fams}",
        f"- link settings (RTT = 2 x one-way delay; queue in packets): {links}",
        f"- session length: {cap}; seed {s['seed']}"
        + (
            f"; at most {s['max_traces_per_family']} traces per family (seeded draw)"
            if s["max_traces_per_family"]
            else ""
        ),
        "- across sessions, delay figures are means of per-session percentiles (Pantheon); "
        "stall p95 is the 95th percentile of per-session stall rates",
        "",
        "## All sessions",
        "",
        *_table([(name, e["overall"]) for name, e in ctl.items()], "controller"),
        "",
    ]
    base = results.get("baseline")
    if base is not None and results["vs_baseline"]:
        out += [
            f"## Against {base} (paired)",
            "",
            f"Relative change of each aggregate against {base} on the same sessions, with "
            f"{100 * CONFIDENCE:.0f} % paired bootstrap intervals ({s['resamples']} resamples of "
            "sessions, drawn jointly for both controllers); bold: the interval excludes 0. "
            "Lower is better for stall and delay, higher for bitrate.",
            "",
            *_change_table(
                [(n, e["overall"]) for n, e in results["vs_baseline"].items()], "controller"
            ),
            "",
        ]
    elif "vs_baseline_note" in results:
        out += [f"_{results['vs_baseline_note']}._", ""]
    families = sorted({f for e in ctl.values() for f in e.get("families", {})})
    for fam in families:
        out += [f"## Family `{fam}`", ""]
        out += _table(
            [(n, e["families"][fam]) for n, e in ctl.items() if fam in e.get("families", {})],
            "controller",
        )
        rows = [
            (n, e["families"][fam])
            for n, e in results.get("vs_baseline", {}).items()
            if fam in e.get("families", {})
        ]
        if rows:
            out += ["", f"Against {base}:", "", *_change_table(rows, "controller")]
        out.append("")
    present = {g for e in ctl.values() for g in e.get("links", {})}
    link_labels = [link["label"] for link in s["links"] if link["label"] in present]
    if link_labels:
        out += ["## By link setting", ""]
        rows = [
            (f"{n} / {g}", e["links"][g])
            for g in link_labels
            for n, e in ctl.items()
            if g in e.get("links", {})
        ]
        out += [*_table(rows, "controller / link"), ""]
    if figures:
        out += ["## Plots", ""]
        out += [f"![{PurePath(f).stem}]({f})" for f in figures]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
