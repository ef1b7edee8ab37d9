"""Which traces training may use, and how an episode's link is drawn from them.

One family of the shared traces (:data:`HELD_OUT_FAMILY`) is kept out of all training and
tuning: the evaluation reports on it separately. Training refuses any trace of that family.

An episode is a :class:`EpisodeSpec`: a trace (by path, so worker processes and Ray nodes load
it themselves), a start offset into the looping trace, and the link's one-way delay, drop-tail
queue and random loss (:class:`LinkRanges`). Specs are drawn from a seeded generator, so a run
is reproducible from its seed whatever the number of workers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from loki.emu.session import LinkConfig
from traces import generators
from traces.load import find_traces, load_trace, trace_family
from traces.mahimahi import write_mahimahi
from traces.poisson_delivery import poisson_delivery
from traces.trace import Trace

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_TRACES = REPO_ROOT.parent / "shared" / "traces"
HELD_OUT_FAMILY = "mahimahi_cellular_us"
TRAINING_FAMILIES = ("fcc_broadband", "ireland_5g_ucc", "norway_hsdpa_3g", "opennetlab_gym")


class HeldOutError(ValueError):
    """A held-out trace was given to training."""


def default_training_dirs() -> list[Path]:
    return [SHARED_TRACES / f for f in TRAINING_FAMILIES]


def training_trace_paths(dirs: list[Path] | None = None) -> list[str]:
    """Trace files under ``dirs`` (default: the four training families), never the held-out.

    Each is loaded once here (they are cached for the episodes): a malformed trace stops the
    run before anything is written, with its file and line, not in an episode minutes later.
    """
    paths: list[str] = []
    for d in dirs or default_training_dirs():
        for p in find_traces(d):
            if trace_family(p) == HELD_OUT_FAMILY:
                raise HeldOutError(
                    f"{p} belongs to the held-out family {HELD_OUT_FAMILY}; it is for evaluation "
                    f"only"
                )
            cached_trace(str(p))
            paths.append(str(p))
    if not paths:
        raise ValueError("no training traces found")
    return paths


#: Name of the synthetic family's folder (and so its family name, see traces.load.trace_family).
SYNTHETIC_FAMILY = "synthetic"


def synthetic_traces() -> list[Trace]:
    """The project's own links as a training family: what GCC does on them is well known.

    Real corpora hold few smooth links at multi-Mbps rates and few clean faults; a clone fitted
    on them alone can drift on a constant link or stay low after an outage (loki/LEARNING.md,
    session 5). Fixed seeds: the family is the same in every run.
    """
    minute = 60_000
    out = [generators.constant(r * 1e6, minute) for r in (0.5, 1, 2, 3, 5, 8, 12)]
    out += [
        generators.steps([(20_000, 3e6), (20_000, 0.3e6), (20_000, 3e6)], "steps-3-0.3-3"),
        generators.steps([(20_000, 1e6), (20_000, 4e6), (20_000, 1e6)], "steps-1-4-1"),
        generators.steps([(20_000, 6e6), (20_000, 2e6), (20_000, 6e6)], "steps-6-2-6"),
        generators.periodic_outages(3e6, 30_000, 5_000, minute, "outages-3mbps-5s"),
        generators.periodic_outages(1.5e6, 20_000, 2_000, minute, "outages-1.5mbps-2s"),
    ]
    out += [
        generators.random_walk(
            minute, start_bps=2e6, min_bps=0.3e6, max_bps=8e6, seed=k, name=f"walk-{k}"
        )
        for k in range(3)
    ]
    out += [generators.markov_modulated(minute, seed=k, name=f"markov-{k}") for k in range(3)]
    return out


def write_synthetic_family(folder: Path) -> list[str]:
    """Write :func:`synthetic_traces` as mahimahi files (workers load traces by path)."""
    folder = Path(folder) / SYNTHETIC_FAMILY
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for trace in synthetic_traces():
        path = folder / f"{trace.name}.mahi"
        write_mahimahi(trace, path)
        paths.append(str(path))
    return paths


@functools.lru_cache(maxsize=512)
def cached_trace(path: str) -> Trace:
    return load_trace(path)


def rotate(trace: Trace, offset_ms: int) -> Trace:
    """The same looping trace started ``offset_ms`` into its period."""
    period = trace.period_ms
    off = int(offset_ms) % period
    if off == 0:
        return trace
    ops = trace.opportunities_ms
    head = ops[ops > off] - off
    tail = ops[ops <= off] + (period - off)
    shifted = np.concatenate([head, tail])
    # The period must stay the last timestamp: mahimahi loops at the last opportunity.
    if shifted[-1] != period:
        shifted = np.append(shifted, period) if shifted[-1] < period else shifted
    return Trace(f"{trace.name}@{off}", shifted, dict(trace.meta))


@dataclass(frozen=True)
class LinkRanges:
    """Where an episode's link settings are drawn from (uniformly)."""

    delay_ms: tuple[int, int] = (10, 80)
    queue_packets: tuple[int, int] = (50, 400)
    loss: tuple[float, float] = (0.0, 0.02)
    #: Share of episodes with no random loss (real links are often loss-free).
    no_loss_share: float = 0.5
    #: Share of episodes with one path change: the one-way delay steps up by ``path_extra_ms``
    #: for ``path_change_s`` and back (a handover or re-route). 0 by default, and then
    #: nothing more is drawn, so runs without it are the same as before it existed.
    path_change_share: float = 0.0
    path_extra_ms: tuple[int, int] = (100, 1000)
    path_change_s: tuple[float, float] = (2.0, 15.0)
    #: Share of episodes whose deliveries are re-timed as a Poisson process within each
    #: 200 ms (``--bursty``, traces.poisson_delivery). 0 by default, and then nothing more is
    #: drawn, as for path changes.
    bursty_share: float = 0.0


@dataclass(frozen=True)
class EpisodeSpec:
    """Everything that makes one training or evaluation session."""

    trace_path: str
    offset_ms: int
    delay_ms: int
    queue_packets: int | None
    loss: float
    duration_s: float
    seed: int
    #: ``(start_ms, end_ms, extra_ms)``: one path change, or None.
    path_change: tuple[int, int, int] | None = None
    #: Deliveries re-timed as a Poisson process within each 200 ms (traces.poisson_delivery),
    #: drawn from ``seed``.
    bursty: bool = False
    #: Which repeat of the same trace window and link this is (evaluation's ``--replicas``:
    #: only ``seed`` differs between repeats).
    replica: int = 0

    def link(self) -> LinkConfig:
        trace = rotate(cached_trace(self.trace_path), self.offset_ms)
        if self.bursty:
            trace = poisson_delivery(trace, self.seed)
        return LinkConfig(
            trace=trace,
            delay_ms=self.delay_ms,
            queue_packets=self.queue_packets,
            loss=self.loss,
            path_delay_steps_ms=(self.path_change,) if self.path_change else (),
        )


@functools.cache
def _by_family(paths: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    groups: dict[str, list[str]] = {}
    for p in paths:
        groups.setdefault(trace_family(p), []).append(p)
    return tuple(tuple(groups[f]) for f in sorted(groups))


def split_by_trace(
    paths: list[str], rng: np.random.Generator, val_share: float
) -> tuple[list[str], list[str]]:
    """(fit, validation) paths, split by trace: ``val_share`` of them (at least one) validate.

    With a single trace both sets are that trace. Always draws one permutation from ``rng``,
    so a caller that goes on drawing from it gets the same stream whatever the split.
    """
    order = rng.permutation(len(paths))
    if len(paths) < 2:
        return list(paths), list(paths)
    n_val = max(1, round(val_share * len(paths)))
    fit = [paths[i] for i in order[n_val:]] or list(paths)
    return fit, [paths[i] for i in order[:n_val]]


def draw_spec(
    paths: list[str],
    rng: np.random.Generator,
    duration_s: float,
    ranges: LinkRanges,
    *,
    balance_families: bool = False,
) -> EpisodeSpec:
    """One episode. ``balance_families``: pick a family uniformly, then a trace of it.

    Per trace, the families weigh by their trace counts (fcc 177, norway 80, 5G 48, OpenNetLab
    7): the fast, bursty links (5G, OpenNetLab) are then under a fifth of the episodes.
    """
    if balance_families:
        groups = _by_family(tuple(paths))
        group = groups[int(rng.integers(len(groups)))]
        path = group[int(rng.integers(len(group)))]
    else:
        path = paths[int(rng.integers(len(paths)))]
    period = cached_trace(path).period_ms
    lossless = rng.random() < ranges.no_loss_share
    spec = EpisodeSpec(
        trace_path=path,
        offset_ms=int(rng.integers(period)),
        delay_ms=int(rng.integers(ranges.delay_ms[0], ranges.delay_ms[1] + 1)),
        queue_packets=int(rng.integers(ranges.queue_packets[0], ranges.queue_packets[1] + 1)),
        loss=0.0 if lossless else float(rng.uniform(*ranges.loss)),
        duration_s=duration_s,
        seed=int(rng.integers(2**31)),
    )
    if ranges.path_change_share > 0 and rng.random() < ranges.path_change_share:
        spec = replace(spec, path_change=draw_path_change(rng, duration_s, ranges))
    if ranges.bursty_share > 0 and rng.random() < ranges.bursty_share:
        spec = replace(spec, bursty=True)
    return spec


def bursty_text(share: float) -> str:
    """The model card's words for ``--bursty`` ('' when off)."""
    if share <= 0:
        return ""
    return (
        f"; deliveries re-timed as a Poisson process within each 200 ms in {share:.0%} of "
        f"the fitting episodes"
    )


def episode_links_text(path_change_share: float = 0.0, bursty_share: float = 0.0) -> str:
    """The model cards' words for the links a training episode draws (from :class:`LinkRanges`,
    so a card cannot say other ranges than the ones drawn)."""
    r = LinkRanges()
    return (
        f"one-way delay {r.delay_ms[0]}-{r.delay_ms[1]} ms, queue {r.queue_packets[0]}-"
        f"{r.queue_packets[1]} packets, loss 0 or {100 * r.loss[0]:g}-{100 * r.loss[1]:g} %"
        f"{path_change_text(path_change_share)}{bursty_text(bursty_share)}"
    )


def path_change_text(share: float) -> str:
    """The model card's words for ``--path-changes`` ('' when off)."""
    if share <= 0:
        return ""
    lo, hi = LinkRanges.path_extra_ms
    s0, s1 = LinkRanges.path_change_s
    return (
        f"; a path change (one-way delay +{lo}-{hi} ms for {s0:g}-{s1:g} s) in "
        f"{share:.0%} of the fitting episodes"
    )


def draw_path_change(
    rng: np.random.Generator, duration_s: float, ranges: LinkRanges
) -> tuple[int, int, int]:
    """One path change inside an episode: ``(start_ms, end_ms, extra_ms)``.

    Why episodes may have them (``--path-changes``): training links have a fixed path, so a
    learned controller can only read a handover that adds 960 ms as a full queue; the shipped
    networks cut far below GCC there, which cuts once at the step and climbs back at once
    (bench/faults.py, issue 7). The change starts after a few seconds (the controller has
    settled) and may outlast the episode. (Measured in session 6: training with them did not
    make the networks hold through a change; loki/LEARNING.md.)
    """
    total_ms = round(duration_s * 1000)
    start = int(rng.integers(min(5_000, total_ms // 4), max(total_ms - 2_000, total_ms // 2)))
    length = int(rng.uniform(*ranges.path_change_s) * 1000)
    extra = int(rng.integers(ranges.path_extra_ms[0], ranges.path_extra_ms[1] + 1))
    return (start, start + length, extra)
