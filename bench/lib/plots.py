"""The benchmark's figures (PNG, matplotlib Agg).

* ``throughput_delay.png``: Pantheon's summary plot (Yan et al., USENIX ATC 2018): each session
  a dot at (p95 frame delay, mean bitrate), each controller a centroid and its one-sigma
  ellipse, delay axis logarithmic and inverted so that better is up and to the right. One panel
  for all sessions, one per trace family.
* ``stall_rate_cdf.png`` and ``frame_delay_cdf.png``: CDFs over sessions.
* ``worst_<controller>.png``: send rate against capacity over time in the controller's worst
  sessions (highest stall rate).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.lib.sessions import LinkSetting, write_atomic

DPI = 110
PANEL_COLUMNS = 3
#: Bitrates spanning more than this ratio get a logarithmic axis.
LOG_RATE_SPAN = 20.0
ELLIPSE_POINTS = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(controllers: Sequence[str]) -> dict[str, str]:
    return {name: f"C{i % 10}" for i, name in enumerate(controllers)}


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    _pyplot().close(fig)
    write_atomic(path, buf.getvalue())


def _points(records: Sequence[dict], name: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [
        (r["qoe"]["frame_delay_p95_ms"], r["qoe"]["bitrate_kbps"])
        for r in records
        if r["task"]["controller"] == name
    ]
    a = np.array(rows, dtype=np.float64).reshape(-1, 2)
    ok = np.isfinite(a).all(axis=1) & (a[:, 0] > 0)
    return a[ok, 0], a[ok, 1]


def _ellipse(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """One-sigma covariance ellipse of the points (in the coordinates given)."""
    if x.size < 3:
        return None
    cov = np.cov(np.vstack([x, y]))
    if not np.all(np.isfinite(cov)):
        return None
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * np.pi, ELLIPSE_POINTS)
    circle = np.vstack([np.cos(t), np.sin(t)])
    pts = vecs @ (np.sqrt(np.maximum(vals, 0))[:, None] * circle)
    return x.mean() + pts[0], y.mean() + pts[1]


def _throughput_delay_panel(ax, records, controllers, colors, title: str) -> None:
    all_rates = []
    for name in controllers:
        d, r = _points(records, name)
        if d.size == 0:
            continue
        all_rates.append(r)
        ax.scatter(d, r, s=8, alpha=0.35, color=colors[name], linewidths=0)
    rates = np.concatenate(all_rates) if all_rates else np.array([])
    log_rate = rates.size > 0 and rates.min() > 0 and rates.max() / rates.min() > LOG_RATE_SPAN
    for name in controllers:
        d, r = _points(records, name)
        if d.size == 0:
            continue
        # Centroid and ellipse in the plotted (log delay, maybe log rate) coordinates.
        ld = np.log2(d)
        yr = np.log2(np.maximum(r, 1e-3)) if log_rate else r
        ax.scatter(
            2 ** ld.mean(),
            2 ** yr.mean() if log_rate else yr.mean(),
            s=70,
            color=colors[name],
            edgecolors="black",
            zorder=3,
            label=name,
        )
        ell = _ellipse(ld, yr)
        if ell is not None:
            ex, ey = ell
            ax.plot(2**ex, 2**ey if log_rate else ey, color=colors[name], lw=1.2)
    ax.set_xscale("log", base=2)
    if log_rate:
        ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("p95 frame delay (ms, log; better ->)")
    ax.set_ylabel("mean bitrate (kbps)")
    ax.set_title(title, fontsize="medium")
    ax.grid(True, which="both", alpha=0.3)


def throughput_delay(records, controllers, path: Path) -> None:
    plt = _pyplot()
    families = sorted({r["task"]["family"] for r in records})
    panels = [("all sessions", list(records))]
    if len(families) > 1:
        panels += [(f, [r for r in records if r["task"]["family"] == f]) for f in families]
    ncols = min(PANEL_COLUMNS, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), squeeze=False)
    colors = _colors(controllers)
    for ax, (title, recs) in zip(axes.flat, panels, strict=False):
        _throughput_delay_panel(ax, recs, controllers, colors, title)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small", loc="best")
    fig.suptitle("Throughput vs delay per session (dots), centroid and 1-sigma ellipse")
    fig.tight_layout()
    _save(fig, path)


def _cdf(ax, values: np.ndarray, color: str, label: str, **kw) -> None:
    v = np.sort(values[np.isfinite(values)])
    if v.size == 0:
        return
    y = np.arange(1, v.size + 1) / v.size
    ax.step(
        np.concatenate([[v[0]], v]),
        np.concatenate([[0.0], y]),
        where="post",
        color=color,
        label=label,
        **kw,
    )


def _field(records, name: str, qfield: str) -> np.ndarray:
    return np.array(
        [r["qoe"][qfield] for r in records if r["task"]["controller"] == name], dtype=np.float64
    )


def stall_rate_cdf(records, controllers, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = _colors(controllers)
    for name in controllers:
        _cdf(ax, 100 * _field(records, name, "stall_rate"), colors[name], name)
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("stall rate per session (% of session time frozen; symlog)")
    ax.set_ylabel("share of sessions")
    ax.set_ylim(0, 1.01)
    ax.axhline(0.95, color="0.6", lw=0.8, ls=":")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def frame_delay_cdf(records, controllers, path: Path) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = _colors(controllers)
    for ax, qfield, what in (
        (axes[0], "frame_delay_p50_ms", "median"),
        (axes[1], "frame_delay_p95_ms", "95th percentile"),
    ):
        for name in controllers:
            _cdf(ax, _field(records, name, qfield), colors[name], name)
        ax.set_xscale("log")
        ax.set_xlabel(f"{what} frame delay per session (ms, log)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("share of sessions")
    axes[0].set_ylim(0, 1.01)
    axes[1].legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    _save(fig, path)


def _bin_edges(timeline: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-second bins drawn as steps that end where the last bin ends, not where it starts."""
    t = np.asarray(timeline["time_s"], dtype=np.float64)
    step_s = t[1] - t[0] if t.size > 1 else 1.0
    edges = np.append(t, t[-1] + step_s) if t.size else t
    series = {
        k: np.append(v, v[-1]) if (v := np.asarray(vals, dtype=np.float64)).size else v
        for k, vals in timeline.items()
    }
    return edges, series


def worst_sessions(name: str, sessions: Sequence[tuple[dict, dict]], color: str, path: Path):
    plt = _pyplot()
    n = len(sessions)
    fig, axes = plt.subplots(n, 1, figsize=(10, 2.6 * n), squeeze=False)
    for ax, (rec, tl) in zip(axes[:, 0], sessions, strict=True):
        t, series = _bin_edges(tl)
        ax.fill_between(t, series["capacity_kbps"], step="post", color="0.85", label="capacity")
        ax.plot(t, series["sent_kbps"], drawstyle="steps-post", color=color, lw=1.1, label="sent")
        ax.plot(
            t,
            series["target_kbps"],
            drawstyle="steps-post",
            color="black",
            lw=0.8,
            ls="--",
            label="target",
        )
        ax.plot(
            t,
            series["delivered_kbps"],
            drawstyle="steps-post",
            color="C2",
            lw=0.7,
            alpha=0.8,
            label="delivered",
        )
        ax.set_ylabel("kbps")
        q = rec["qoe"]
        link = LinkSetting(**rec["task"]["link"]).label
        ax.set_title(
            f"{rec['trace_name']} ({rec['task']['family']}, {link}): stall "
            f"{100 * q['stall_rate']:.1f} %, p95 frame delay {q['frame_delay_p95_ms']:.0f} ms",
            fontsize="small",
        )
        # Frame delay on a second axis shows when the queue built up, not just the rate.
        ax2 = ax.twinx()
        ax2.plot(t, series["frame_delay_ms"], drawstyle="steps-post", color="C3", lw=0.6, alpha=0.7)
        ax2.set_ylabel("frame delay ms", color="C3", fontsize="small")
        ax2.tick_params(axis="y", labelcolor="C3", labelsize="small")
    axes[0, 0].legend(fontsize="x-small", loc="upper right", ncol=4)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(f"{name}: worst sessions by stall rate", fontsize="medium")
    fig.tight_layout()
    _save(fig, path)


def safe_name(name: str) -> str:
    """A controller name usable in a file name (``fixed:2500`` -> ``fixed_2500``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def write_all(
    records: Sequence[dict],
    controllers: Sequence[str],
    worst: dict[str, list[tuple[dict, dict]]],
    out_dir: Path,
) -> list[str]:
    """Draw every figure into ``out_dir``; returns their file names, in report order."""
    out_dir = Path(out_dir)
    names = ["throughput_delay.png", "stall_rate_cdf.png", "frame_delay_cdf.png"]
    throughput_delay(records, controllers, out_dir / names[0])
    stall_rate_cdf(records, controllers, out_dir / names[1])
    frame_delay_cdf(records, controllers, out_dir / names[2])
    colors = _colors(controllers)
    for name, sessions in worst.items():
        if sessions:
            fname = f"worst_{safe_name(name)}.png"
            worst_sessions(name, sessions, colors[name], out_dir / fname)
            names.append(fname)
    return names
