"""Plots people read: send rate against capacity, and delay, over a session's time line."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_sessions(timelines: dict[str, dict[str, np.ndarray]], path: Path, title: str = "") -> None:
    """Two panels sharing time: rates (capacity shaded) and frame delay, one line per controller."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_delay) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    first = next(iter(timelines.values()))
    t = first["time_s"]
    ax_rate.fill_between(t, first["capacity_kbps"], step="post", color="0.85", label="capacity")
    for name, tl in timelines.items():
        (line,) = ax_rate.plot(
            tl["time_s"], tl["sent_kbps"], drawstyle="steps-post", label=f"{name} sent"
        )
        ax_rate.plot(
            tl["time_s"],
            tl["target_kbps"],
            drawstyle="steps-post",
            ls="--",
            lw=0.8,
            color=line.get_color(),
            label=f"{name} target",
        )
        ax_delay.plot(
            tl["time_s"],
            tl["frame_delay_ms"],
            drawstyle="steps-post",
            color=line.get_color(),
            label=name,
        )
    ax_rate.set_ylabel("kbps")
    ax_rate.legend(loc="upper right", fontsize="small", ncol=2)
    ax_delay.set_ylabel("frame delay (ms)")
    ax_delay.set_xlabel("time (s)")
    ax_delay.set_yscale("log")
    if title:
        ax_rate.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
