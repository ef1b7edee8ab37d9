"""Training data: the held-out family is refused, trace rotation, reproducible link draws."""

import json
from pathlib import Path

import numpy as np
import pytest

from loki.train.data import (
    HELD_OUT_FAMILY,
    SYNTHETIC_FAMILY,
    EpisodeSpec,
    HeldOutError,
    LinkRanges,
    draw_spec,
    rotate,
    synthetic_traces,
    training_trace_paths,
    write_synthetic_family,
)
from traces.generators import steps
from traces.load import load_trace, trace_family
from traces.mahimahi import write_mahimahi
from traces.trace import Trace


def _family(root, name, n=2):
    d = root / name
    d.mkdir()
    (d / "SOURCE.json").write_text(json.dumps({"name": name}))
    for i in range(n):
        write_mahimahi(steps([(2000, 1e6 * (i + 1)), (2000, 3e5)]), d / f"t{i}.mahi")
    return d


def test_held_out_family_is_refused(tmp_path):
    ok = _family(tmp_path, "some_family")
    held = _family(tmp_path, HELD_OUT_FAMILY)
    assert len(training_trace_paths([ok])) == 2
    with pytest.raises(HeldOutError, match=HELD_OUT_FAMILY):
        training_trace_paths([ok, held])


def test_rotation_keeps_the_loop():
    t = Trace("t", np.array([0, 3, 5, 5, 9, 10]))
    r = rotate(t, 4)
    assert r.period_ms == t.period_ms
    # Phases shift by 4 ms; the period must stay the last timestamp, which may add one
    # opportunity per loop (at the new loop point).
    assert r.opportunities_ms.tolist() == [1, 1, 5, 6, 6, 9, 10]
    assert abs(r.opportunities_between(0, 1000) - t.opportunities_between(0, 1000)) <= 100
    assert rotate(t, 0) is t and rotate(t, 10) is t


def test_draws_are_reproducible_and_in_range(tmp_path):
    paths = training_trace_paths([_family(tmp_path, "fam", n=3)])
    ranges = LinkRanges(delay_ms=(10, 20), queue_packets=(50, 60), loss=(0.0, 0.01))
    a = [draw_spec(paths, np.random.default_rng(5), 10.0, ranges) for _ in range(3)]
    b = [draw_spec(paths, np.random.default_rng(5), 10.0, ranges) for _ in range(3)]
    assert a == b
    rng = np.random.default_rng(6)
    specs = [draw_spec(paths, rng, 10.0, ranges) for _ in range(200)]
    assert all(10 <= s.delay_ms <= 20 and 50 <= s.queue_packets <= 60 for s in specs)
    assert all(0.0 <= s.loss <= 0.01 for s in specs)
    lossless = sum(s.loss == 0.0 for s in specs) / len(specs)
    assert 0.35 < lossless < 0.65  # half the episodes have no random loss
    assert len({s.trace_path for s in specs}) == 3


def test_balanced_draws_give_each_family_an_equal_share(tmp_path):
    big = _family(tmp_path, "big_family", n=9)
    small = _family(tmp_path, "small_family", n=1)
    paths = training_trace_paths([big, small])
    ranges = LinkRanges()
    rng = np.random.default_rng(7)
    per_trace = [draw_spec(paths, rng, 10.0, ranges) for _ in range(1000)]
    rng = np.random.default_rng(7)
    balanced = [draw_spec(paths, rng, 10.0, ranges, balance_families=True) for _ in range(1000)]

    def small_share(specs):
        return sum("small_family" in s.trace_path for s in specs) / len(specs)

    assert 0.05 < small_share(per_trace) < 0.15  # 1 trace of 10
    assert 0.45 < small_share(balanced) < 0.55  # 1 family of 2
    assert len({s.trace_path for s in balanced}) == 10
    # The default draw is unchanged by the option's existence (committed models rebuild).
    again = [draw_spec(paths, np.random.default_rng(7), 10.0, ranges) for _ in range(1)]
    assert again[0] == per_trace[0]


def test_synthetic_family_is_fixed_and_reads_back(tmp_path):
    paths = write_synthetic_family(tmp_path)
    again = write_synthetic_family(tmp_path / "again")
    assert len(paths) == len(synthetic_traces()) >= 15
    assert {trace_family(p) for p in paths} == {SYNTHETIC_FAMILY}
    for a, b in zip(paths, again, strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()  # fixed seeds: the same family
    const3 = load_trace(next(p for p in paths if p.endswith("constant-3mbps.mahi")))
    assert const3.period_ms == 60_000
    # 3 Mbps is 250 opportunities of 1500 bytes per second.
    assert abs(const3.opportunities_between(0, 60_000) - 15_000) <= 1
    balanced = [
        draw_spec(paths, np.random.default_rng(3), 10.0, LinkRanges(), balance_families=True)
    ]
    assert balanced[0].trace_path in paths


def test_spec_builds_its_link(tmp_path):
    paths = training_trace_paths([_family(tmp_path, "fam", n=1)])
    spec = EpisodeSpec(paths[0], 1500, 30, 100, 0.01, 5.0, 1)
    link = spec.link()
    assert (link.delay_ms, link.queue_packets, link.loss) == (30, 100, 0.01)
    assert link.trace.name.endswith("@1500")


def test_path_changes_are_drawn_only_when_asked_and_stay_in_range(tmp_path):
    paths = training_trace_paths([_family(tmp_path, "fam", n=3)])
    plain = LinkRanges()
    with_changes = LinkRanges(path_change_share=0.3)
    rng = np.random.default_rng(11)
    specs = [draw_spec(paths, rng, 30.0, with_changes) for _ in range(400)]
    changed = [s.path_change for s in specs if s.path_change is not None]
    assert 0.22 < len(changed) / len(specs) < 0.38
    for start, end, extra in changed:
        assert 5_000 <= start < 28_000  # after the controller has settled, before the end
        assert 2_000 <= end - start <= 15_000
        assert 100 <= extra <= 1_000
    # Without the option nothing more is drawn: the default episodes are the ones the
    # committed models were trained on.
    a = np.random.default_rng(4)
    b = np.random.default_rng(4)
    assert [draw_spec(paths, a, 30.0, plain) for _ in range(5)] == [
        draw_spec(paths, b, 30.0, LinkRanges(path_change_share=0.0)) for _ in range(5)
    ]
    assert all(draw_spec(paths, a, 30.0, plain).path_change is None for _ in range(50))


def test_a_path_change_reaches_the_session_link(tmp_path):
    paths = training_trace_paths([_family(tmp_path, "fam", n=1)])
    spec = EpisodeSpec(paths[0], 0, 30, 100, 0.0, 5.0, 1, path_change=(1_000, 3_000, 400))
    assert spec.link().path_delay_steps_ms == ((1_000, 3_000, 400),)
    assert EpisodeSpec(paths[0], 0, 30, 100, 0.0, 5.0, 1).link().path_delay_steps_ms == ()


def test_bursty_links_are_drawn_only_when_asked(tmp_path):
    paths = training_trace_paths([_family(tmp_path, "fam", n=3)])
    rng = np.random.default_rng(2)
    specs = [draw_spec(paths, rng, 30.0, LinkRanges(bursty_share=0.5)) for _ in range(400)]
    assert 0.42 < sum(s.bursty for s in specs) / len(specs) < 0.58
    # Without the option nothing more is drawn (the committed models' episodes).
    a, b = np.random.default_rng(4), np.random.default_rng(4)
    assert [draw_spec(paths, a, 30.0, LinkRanges()) for _ in range(5)] == [
        draw_spec(paths, b, 30.0, LinkRanges(bursty_share=0.0)) for _ in range(5)
    ]


def test_a_bursty_spec_retimes_its_link_and_keeps_its_capacity(tmp_path):
    paths = training_trace_paths([_family(tmp_path, "fam", n=1)])
    plain = EpisodeSpec(paths[0], 700, 30, 100, 0.0, 5.0, 9).link().trace
    bursty = EpisodeSpec(paths[0], 700, 30, 100, 0.0, 5.0, 9, bursty=True).link().trace
    assert bursty.period_ms == plain.period_ms
    assert bursty.opportunities_ms.size == plain.opportunities_ms.size
    assert not np.array_equal(bursty.opportunities_ms, plain.opportunities_ms)
    assert bursty.opportunities_between(0, 2_000) == plain.opportunities_between(0, 2_000)
