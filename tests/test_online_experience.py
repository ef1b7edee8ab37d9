"""Experience logs: format, crash tolerance, and the emulator and wrapper hooks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loki.controllers import make_controller
from loki.emu.session import Session, SessionConfig
from loki.experience import (
    FLUSH_INTERVAL_US,
    LOG_VERSION,
    ExperienceWriter,
    LoggingController,
    file_sha256,
    log_emulated_session,
    open_session_log,
    read_log,
)
from loki.learned.models import controller_from_model, model_path
from loki.train.data import EpisodeSpec
from traces.generators import markov_modulated
from traces.mahimahi import write_mahimahi

LOKI = str(model_path("loki"))


@pytest.fixture(scope="module")
def trace_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tr") / "mm.up"
    write_mahimahi(markov_modulated(20_000, seed=3), path)
    return str(path)


def spec(trace_path: str, duration_s: float = 6.0) -> EpisodeSpec:
    return EpisodeSpec(trace_path, 0, 30, 150, 0.0, duration_s, seed=5)


def test_round_trip_and_torn_record(tmp_path):
    w = ExperienceWriter(tmp_path / "a.explog", model_sha256="abc", obs_size=4, gate_size=2)
    for k in range(3):
        w.write(k * 100_000, obs=np.arange(4) + k, action=0.1 * k, gates=[0.2, 0.8])
    w.close()
    log = read_log(tmp_path / "a.explog")
    assert log.header["version"] == LOG_VERSION and log.header["model_sha256"] == "abc"
    assert log.records.size == 3
    np.testing.assert_allclose(log.records["obs"][2], [2, 3, 4, 5])
    assert np.isnan(log.records["frozen_share"]).all()  # truth absent unless the emulator logs it
    # A crash mid-record: the torn tail is dropped, whole records survive.
    data = (tmp_path / "a.explog").read_bytes()
    (tmp_path / "b.explog").write_bytes(data[:-7])
    assert read_log(tmp_path / "b.explog").records.size == 2


def test_flushed_every_second_of_session_time(tmp_path):
    path = tmp_path / "f.explog"
    w = ExperienceWriter(path, obs_size=2)
    header_bytes = path.stat().st_size
    w.write(0, action=0.0)  # first write flushes
    for k in range(1, 12):
        w.write(k * 100_000, action=0.0)
    # 1.1 s of session time written without close(): at most the last second is unflushed.
    on_disk = (path.stat().st_size - header_bytes) // w.dtype.itemsize
    assert on_disk >= 12 - FLUSH_INTERVAL_US // 100_000
    w.close()


def test_version_mismatch_is_refused(tmp_path):
    path = tmp_path / "v.explog"
    ExperienceWriter(path, obs_size=2).close()
    text = path.read_text().replace(f'"version": {LOG_VERSION}', '"version": 99')
    path.write_text(text)
    with pytest.raises(ValueError, match="version"):
        read_log(path)


def test_emulated_session_logs_every_decision(tmp_path, trace_path):
    path = tmp_path / "s.explog"
    log_emulated_session((spec(trace_path), LOKI, str(path), 0.0, 0))
    log = read_log(path)
    recs = log.records
    assert json.loads(path.read_bytes().split(b"\n")[0])["gate_size"] == 128
    assert 50 <= recs.size <= 61  # one decision per 100 ms report over 6 s
    ok = recs["fallback"] == 0
    # Without exploration the action taken is the policy's own.
    np.testing.assert_allclose(recs["action"][ok], recs["mean_action"][ok], atol=1e-6)
    g = recs["gates"][ok]
    assert ((g > 0) & (g < 1)).all()
    assert np.isfinite(recs["frozen_share"]).all() and np.isfinite(recs["utilisation"]).all()
    assert (np.diff(recs["at_us"]) > 0).all()


def test_logging_does_not_change_the_session(tmp_path, trace_path):
    s = spec(trace_path)
    plain = Session(controller_from_model(LOKI), s.link(), SessionConfig(duration_s=6, seed=5))
    a = plain.run()
    w = ExperienceWriter(tmp_path / "x.explog", gate_size=128)
    wrapped = LoggingController(controller_from_model(LOKI), w)
    b = Session(wrapped, s.link(), SessionConfig(duration_s=6, seed=5)).run()
    w.close()
    assert a.decisions == b.decisions
    assert a.qoe == b.qoe


def test_exploration_is_seeded_and_logged(tmp_path, trace_path):
    paths = [tmp_path / f"{k}.explog" for k in range(3)]
    for p, seed in zip(paths, (1, 1, 2), strict=True):
        log_emulated_session((spec(trace_path), LOKI, str(p), 0.1, seed))
    r = [read_log(p).records for p in paths]
    np.testing.assert_array_equal(r[0]["action"], r[1]["action"])
    assert not np.array_equal(r[0]["action"], r[2]["action"])
    ok = r[0]["fallback"] == 0
    eps = (r[0]["action"][ok] - r[0]["mean_action"][ok]) / 0.1
    expect = -0.5 * eps**2 - np.log(0.1 * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(r[0]["logp"][ok], expect, atol=1e-3)


def test_non_learned_controller_passes_through(tmp_path, trace_path):
    s = spec(trace_path)
    w = ExperienceWriter(tmp_path / "g.explog")
    wrapped = LoggingController(make_controller("gcc"), w)
    b = Session(wrapped, s.link(), SessionConfig(duration_s=6, seed=5)).run()
    w.close()
    a = Session(make_controller("gcc"), s.link(), SessionConfig(duration_s=6, seed=5)).run()
    assert a.decisions == b.decisions
    assert read_log(tmp_path / "g.explog").records.size == 0


def test_open_session_log_for_a_live_sender(tmp_path, trace_path):
    # The live sender only sees the Controller interface: drive the wrapper the same way.
    ctl = open_session_log(
        controller_from_model(LOKI), tmp_path / "live", "call-1", model=LOKI, explore_std=0.0
    )
    s = spec(trace_path)
    Session(ctl, s.link(), SessionConfig(duration_s=3, seed=5)).run()
    ctl.close()
    log = read_log(tmp_path / "live" / "call-1.explog")
    assert log.header["model_sha256"] == file_sha256(LOKI)
    assert log.records.size >= 25
    assert np.isnan(log.records["frozen_share"]).all()  # no receiver truth in a live log


def test_fused_forward_matches_the_runtime_policy():
    from loki.experience import FusedForward
    from loki.learned.models import load_learned

    pol = load_learned(LOKI).policy
    fused = FusedForward(LOKI)
    rng = np.random.default_rng(0)
    lo, hi = np.load(LOKI)["obs_low"], np.load(LOKI)["obs_high"]
    for _ in range(20):
        x = rng.uniform(lo, hi).astype(np.float32)
        a, g = fused(x)
        assert a == pytest.approx(pol(x), abs=1e-5)
        np.testing.assert_allclose(g, np.concatenate(pol.gates(x)), atol=1e-6)
