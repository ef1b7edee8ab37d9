"""``loki train risk``: give a model a stall-risk layer fitted on its network's own sessions.

The stall-risk layer (loki/learned/stall_risk.py) was built for online learning: fitted on a
deployment's logs, it cut the new network's p95 stall by 42 % (issue 8). The same fit on logs
the project makes itself, on the training families, is how the shipped ``loki`` gets its layer
(session 9; loki/LEARNING.md): sessions of the *network alone* (a layer the model already has
is dropped for the logging, so running the command on its own output gives the same model),
with the exploration noise of the online loop, drawn over the training links; then the fit of
``loki train online --method risk``.

    loki train risk --seed 11 --workers 2      # the shipped loki's layer (about 10 s)

Logs are kept only when ``--logs DIR`` is given (192 sessions are about 64 MB).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from loki.experience import LOG_SUFFIX, find_logs, log_emulated_session
from loki.learned.models import (
    MIN_TARGET_KEY,
    MIN_TARGET_QUEUE_KEY,
    model_path,
    read_meta,
    with_min_target,
    without_risk_layer,
)
from loki.learned.stall_risk import check_level
from loki.nn import load_model
from loki.train.data import LinkRanges, bursty_text, draw_spec, training_trace_paths
from loki.train.online import RISK_K, train_online_risk
from loki.train.parallel import Executor

#: Logged sessions and their length: 192 x 30 s over the training families' 312 traces (52 860
#: decisions on the shipped layer's draw; session 8 measured the layer fitted on these).
SESSIONS = 192
SESSION_S = 30.0
#: Exploration noise of the logging runs (log2 rate units), as in the online loop: a little,
#: so the logs hold some decisions the network would not make itself.
EXPLORE_STD = 0.02
#: Where ``card.md`` of the model starts the layer's section (replaced when refitted).
CARD_MARKER = "<!-- stall-risk layer (loki train risk) -->"


def log_sessions(
    model: str,
    traces: list[str],
    out: Path,
    sessions: int,
    seed: int,
    workers: int,
    explore_std: float = EXPLORE_STD,
    session_s: float = SESSION_S,
    bursty_share: float = 0.0,
) -> None:
    """Log ``sessions`` emulated sessions of ``model`` on links drawn over ``traces``.

    The links are drawn from ``seed`` alone, so the same seed gives the same sessions whatever
    the number of workers."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    jobs = []
    for k in range(sessions):
        spec = draw_spec(traces, rng, session_s, LinkRanges(bursty_share=bursty_share))
        jobs.append(
            (spec, model, str(out / f"s{k:04d}{LOG_SUFFIX}"), explore_std, seed * 100_000 + k)
        )
    with Executor(workers) as ex:
        ex.map(log_emulated_session, jobs)


def train_risk(
    *,
    from_model: Path | None = None,
    traces: list[Path] | None = None,
    sessions: int = SESSIONS,
    session_s: float = SESSION_S,
    seed: int = 0,
    workers: int = 1,
    k: float = RISK_K,
    smoothing: float = 1.0,
    level: float = 1.0,
    out: Path | None = None,
    logs: Path | None = None,
    bursty_share: float = 0.0,
) -> tuple[Path, dict]:
    """Log the network of ``from_model`` (default: the shipped loki) on the training traces,
    fit the layer, write ``out`` (default: the shipped loki's folder). Returns the model file
    and the fit's figures."""
    source = Path(from_model) if from_model is not None else model_path("loki")
    if not source.is_file():
        raise FileNotFoundError(f"no such model: {source}")
    if sessions <= 0:
        raise ValueError(f"--sessions must be a positive number, got {sessions}")
    if not 5.0 <= session_s <= 3600.0:
        raise ValueError(f"--session-s must be within [5, 3600] seconds, got {session_s}")
    if not 0 <= k < float("inf"):
        raise ValueError(f"--risk-k must be a number >= 0, got {k}")
    if not 0 < smoothing <= 1:
        raise ValueError(f"--risk-smoothing must be in (0, 1], got {smoothing}")
    check_level(level)
    if not 0.0 <= bursty_share <= 1.0:
        raise ValueError(f"--bursty must be a share in [0, 1], got {bursty_share}")
    if logs is not None and logs.exists() and find_logs([logs]):
        raise ValueError(f"{logs} already holds experience logs: give an empty or new folder")
    paths = training_trace_paths(traces)  # refuses the held-out family, loads every trace
    out_dir = Path(out) if out is not None else source.parent
    out_file = out_dir if out_dir.suffix == ".npz" else out_dir / "model.npz"
    card = out_file.parent / "card.md"
    old_card = card.read_text() if card.is_file() else ""
    with tempfile.TemporaryDirectory(prefix="loki-risk-") as tmp:
        network = without_risk_layer(source, Path(tmp) / "network.npz")
        log_dir = logs if logs is not None else Path(tmp) / "logs"
        log_sessions(
            str(network),
            paths,
            log_dir,
            sessions,
            seed,
            workers,
            session_s=session_s,
            bursty_share=bursty_share,
        )
        source_meta = read_meta(load_model(source))
        min_target = source_meta.get(MIN_TARGET_KEY)
        figures = train_online_risk(
            [log_dir], network, out_file, k=k, smoothing=smoothing, level=level, source=source
        )
        if min_target is not None:
            # The logs are the network's alone; the sender's minimum stays the source's.
            with_min_target(out_file, out_file, int(min_target), source_meta[MIN_TARGET_QUEUE_KEY])
    layer_card = card.read_text()
    head = old_card.split(CARD_MARKER)[0].rstrip()
    command = (
        f"loki train risk --seed {seed} --sessions {sessions} --risk-k {k:g}"
        + (f" --session-s {session_s:g}" if session_s != SESSION_S else "")
        + (f" --risk-smoothing {smoothing:g}" if smoothing != 1.0 else "")
        + (f" --risk-level {level:g}" if level != 1.0 else "")
        + (f" --bursty {bursty_share:g}" if bursty_share > 0 else "")
        + (f" --from {source}" if from_model is not None else "")
        + (" --traces " + " ".join(map(str, traces)) if traces else "")
    )
    section = (
        f"{CARD_MARKER}\n## Stall-risk layer\n\nMade by `{command}` ({sessions} logged sessions "
        f"of {session_s:g} s of the network alone on {len(paths)} training traces, exploration "
        f"std {EXPLORE_STD:g}{bursty_text(bursty_share)}).\n\n" + layer_card.split("\n", 2)[2]
    )
    card.write_text((head + "\n\n" + section) if head else section)
    return out_file, figures
