"""The VP8 encoder model against its own calibration (loki/data/vp8_calibration.json).

Expectations are read from the calibration rather than copied, so the tests keep holding after
``bench/calibrate_vp8.py`` is run again; where a test compares with libvpx itself it uses the
measured runs stored in the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from importlib import resources

import numpy as np
import pytest

from loki.emu.encoder import (
    FLOOR_LIMITED_RATIO,
    MIN_FRAME_BYTES,
    EncoderCalibration,
    VideoEncoderModel,
)

FPS = 30.0
FRAME_MS = 1000.0 / FPS


def frame_ms(i: int) -> float:
    return i * FRAME_MS


def run(model: VideoEncoderModel, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    sizes, keys = np.zeros(n), np.zeros(n, dtype=bool)
    for j in range(n):
        sizes[j], keys[j] = model.encode(frame_ms(start + j))
    return sizes, keys


def rate_bps(sizes: np.ndarray) -> float:
    return float(sizes.mean() * 8 * FPS)


@pytest.fixture(scope="module")
def raw() -> dict:
    text = resources.files("loki").joinpath("data/vp8_calibration.json").read_text("utf-8")
    return json.loads(text)


@pytest.fixture(scope="module")
def cal() -> EncoderCalibration:
    return EncoderCalibration.load("640x360")


# -- calibration file ----------------------------------------------------------------------
def test_calibration_has_both_resolutions_and_metadata(raw: dict) -> None:
    assert set(raw["resolutions"]) == {"640x360", "1280x720"}
    for key in ("date", "command", "libvpx", "pyav", "aiortc", "fps"):
        assert raw["meta"][key]
    for res in raw["resolutions"].values():
        assert res["aiortc_equivalence"]["identical"]
        c = EncoderCalibration.from_dict(raw, f"{res['width']}x{res['height']}")
        assert c.floor_bps == min(c.achieved_bps)


def test_unknown_resolution_is_an_error() -> None:
    with pytest.raises(ValueError, match="1920x1080"):
        EncoderCalibration.load("1920x1080")


@pytest.mark.parametrize("resolution", ["640x360", "1280x720"])
def test_interpolation_hits_table_points_and_keeps_the_floor(resolution: str) -> None:
    cal = EncoderCalibration.load(resolution)
    for t, a in zip(cal.target_bps, cal.achieved_bps, strict=True):
        got = cal.interpolate(t)["achieved_bps"]
        if a <= t * FLOOR_LIMITED_RATIO:
            assert got == pytest.approx(a, rel=1e-9)
        else:  # floor-limited entry: the floor, which such entries measure up to noise
            assert got == cal.floor_bps
            assert a == pytest.approx(cal.floor_bps, rel=0.02)
    assert cal.interpolate(cal.target_bps[0] / 10)["achieved_bps"] == cal.floor_bps
    top = cal.target_bps[-1]
    assert cal.interpolate(2 * top)["achieved_bps"] == pytest.approx(
        2 * cal.achieved_bps[-1], rel=1e-9
    )
    # Between the floor and the first target libvpx meets there is no false ramp: the output
    # is the larger of the floor and the target times the met ratio.
    first_met = next(
        t
        for t, a in zip(cal.target_bps, cal.achieved_bps, strict=True)
        if a <= t * FLOOR_LIMITED_RATIO
    )
    mid = 0.5 * (max(cal.floor_bps, first_met / 2) + first_met)
    ratio = cal.achieved_bps[cal.target_bps.index(first_met)] / first_met
    assert cal.interpolate(mid)["achieved_bps"] == pytest.approx(
        max(cal.floor_bps, mid * ratio), rel=1e-9
    )


# -- determinism and basic shape -----------------------------------------------------------
def test_same_seed_same_frames_other_seed_other_frames() -> None:
    def frames(seed: int) -> list[tuple[int, bool]]:
        m = VideoEncoderModel(fps=FPS, keyframe_interval_s=2.0, seed=seed, drop_frames=False)
        m.set_target(800_000, 0)
        out = []
        for i in range(300):
            if i == 100:
                m.set_target(1_500_000, frame_ms(i))
            if i == 200:
                m.request_keyframe()
            out.append(m.encode(frame_ms(i)))
        return out

    assert frames(7) == frames(7)
    assert frames(7) != frames(8)


def test_sizes_are_positive_ints_whatever_the_target() -> None:
    rng = np.random.default_rng(3)
    m = VideoEncoderModel(fps=FPS, keyframe_interval_s=1.0, seed=3, drop_frames=False)
    for i in range(6000):
        if i % 10 == 0:
            m.set_target(float(10 ** rng.uniform(3, 7.5)), frame_ms(i))
        if i % 97 == 0:
            m.request_keyframe()
        size, is_key = m.encode(frame_ms(i))
        assert isinstance(size, int) and isinstance(is_key, bool)
        assert size >= MIN_FRAME_BYTES > 0


def test_invalid_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        VideoEncoderModel(fps=0)
    with pytest.raises(ValueError):
        VideoEncoderModel(keyframe_interval_s=-1)
    with pytest.raises(ValueError):
        VideoEncoderModel(retarget="restart")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        VideoEncoderModel().set_target(0, 0)


# -- frame dropping (libwebrtc's default; the calibration above ran with aiortc's, off) ------
def test_drops_frames_to_follow_a_target_below_the_floor(cal: EncoderCalibration) -> None:
    target = cal.floor_bps / 4
    m = VideoEncoderModel(cal, fps=FPS, seed=7, initial_target_bps=target)
    sizes, _ = run(m, int(60 * FPS))
    late = sizes[int(10 * FPS) :]
    # The delivered rate follows the target, within 20 %, by sending fewer frames.
    assert rate_bps(late) == pytest.approx(target, rel=0.2)
    assert 0.05 < np.mean(late > 0) < 0.5
    assert m.frames_dropped == int(np.sum(sizes == 0))


def test_no_drops_when_the_target_is_reachable(cal: EncoderCalibration) -> None:
    m = VideoEncoderModel(cal, fps=FPS, seed=7, initial_target_bps=1_200_000)
    sizes, _ = run(m, int(30 * FPS))
    assert np.sum(sizes[int(5 * FPS) :] == 0) == 0


def test_requested_keyframe_is_never_dropped(cal: EncoderCalibration) -> None:
    m = VideoEncoderModel(cal, fps=FPS, seed=7, initial_target_bps=cal.floor_bps / 8)
    run(m, int(20 * FPS))
    m.request_keyframe()
    size, key = m.encode(frame_ms(int(20 * FPS)))
    assert key and size > 0


# -- steady state ---------------------------------------------------------------------------
@pytest.mark.parametrize("target_bps", [1_200_000, 2_400_000])
def test_long_run_mean_rate_is_the_calibrated_achieved_rate(
    cal: EncoderCalibration, target_bps: int
) -> None:
    m = VideoEncoderModel(cal, fps=FPS, seed=11, drop_frames=False)
    m.set_target(target_bps, 0)
    sizes, _ = run(m, 20_000)
    want = cal.interpolate(target_bps)["achieved_bps"]
    assert rate_bps(sizes[60:]) == pytest.approx(want, rel=0.02)


def test_frame_size_spread_and_correlation_match_the_calibration(cal: EncoderCalibration) -> None:
    target = 1_200_000
    fig = cal.interpolate(target)
    m = VideoEncoderModel(cal, fps=FPS, seed=5, drop_frames=False)
    m.set_target(target, 0)
    logs = np.log(run(m, 20_000)[0][200:])
    d = logs - logs.mean()
    acf1 = float(np.dot(d[:-1], d[1:]) / np.dot(d, d))
    assert logs.std() == pytest.approx(fig["log_sigma"], rel=0.1)
    assert acf1 == pytest.approx(fig["log_acf1"], abs=0.05)


def test_floor_holds_below_the_minimum_rate(cal: EncoderCalibration) -> None:
    m = VideoEncoderModel(cal, fps=FPS, seed=2, drop_frames=False)
    m.set_target(cal.floor_bps / 5, 0)
    sizes, _ = run(m, 12_000)
    assert rate_bps(sizes[60:]) == pytest.approx(cal.floor_bps, rel=0.03)
    assert m.level_bps >= cal.floor_bps


# -- keyframes -------------------------------------------------------------------------------
def test_first_frame_is_a_keyframe_of_the_calibrated_size(cal: EncoderCalibration) -> None:
    target = 1_200_000
    fig = cal.interpolate(target)
    m = VideoEncoderModel(cal, fps=FPS, noise=False, drop_frames=False)
    m.set_target(target, 0)
    size, is_key = m.encode(0)
    assert is_key
    assert size == round(fig["achieved_bps"] / 8 / FPS * fig["first_keyframe_ratio"])


def test_requested_keyframe_is_the_calibrated_multiple_of_the_mean(cal: EncoderCalibration) -> None:
    target = 2_400_000
    fig = cal.interpolate(target)
    m = VideoEncoderModel(cal, fps=FPS, noise=False, drop_frames=False)
    m.set_target(target, 0)
    run(m, 300)
    m.request_keyframe()
    size, is_key = m.encode(frame_ms(300))
    assert is_key
    assert size / (m.level_bps / 8 / FPS) == pytest.approx(fig["keyframe_ratio"], abs=0.01)
    assert not m.encode(frame_ms(301))[1]


def test_keyframe_ratio_with_noise_averages_to_the_calibration(cal: EncoderCalibration) -> None:
    target = 1_200_000
    fig = cal.interpolate(target)
    m = VideoEncoderModel(cal, fps=FPS, seed=4, drop_frames=False)
    m.set_target(target, 0)
    run(m, 60)
    ratios = []
    for k in range(150):
        m.request_keyframe()
        size, is_key = m.encode(frame_ms(60 + 90 * k))
        assert is_key
        ratios.append(size / (m.level_bps / 8 / FPS))
        run(m, 89, start=61 + 90 * k)
    assert math.exp(np.mean(np.log(ratios))) == pytest.approx(fig["keyframe_ratio"], rel=0.05)
    assert np.std(np.log(ratios)) == pytest.approx(cal.keyframe_log_sigma, rel=0.25)


def test_keyframes_are_periodic_and_also_come_on_request() -> None:
    m = VideoEncoderModel(fps=FPS, keyframe_interval_s=2.0, seed=1, drop_frames=False)
    m.set_target(1_000_000, 0)
    _, keys = run(m, 200)
    assert list(np.nonzero(keys)[0]) == [0, 60, 120, 180]
    m.request_keyframe()
    assert m.encode(frame_ms(200))[1]
    _, keys = run(m, 60, start=201)
    assert list(np.nonzero(keys)[0]) == [59]  # the period restarts from the requested one


def test_no_periodic_keyframes_when_interval_is_zero() -> None:
    m = VideoEncoderModel(fps=FPS, keyframe_interval_s=0.0, seed=1, drop_frames=False)
    m.set_target(1_000_000, 0)
    _, keys = run(m, 3000)
    assert list(np.nonzero(keys)[0]) == [0]


def test_keyframe_cost_follows_the_measured_profile(cal: EncoderCalibration) -> None:
    # At the floor the frames after a keyframe are larger, above it they pay it back.
    for target, more in ((cal.floor_bps / 4, True), (2_400_000, False)):
        fig = cal.interpolate(target)
        m = VideoEncoderModel(cal, fps=FPS, noise=False, drop_frames=False)
        m.set_target(target, 0)
        run(m, 300)
        before = m.level_bps / 8 / FPS
        m.request_keyframe()
        sizes, _ = run(m, 1 + len(fig["post_keyframe_profile"]), start=300)
        extra = sizes.sum() / before - len(sizes)
        want = fig["keyframe_ratio"] - 1 + sum(fig["post_keyframe_profile"]) - len(sizes) + 1
        assert extra == pytest.approx(want, abs=0.5)
        assert (extra > fig["keyframe_ratio"]) == more


# -- following a new target ------------------------------------------------------------------
def _measured_step(raw: dict, resolution: str, kind: str, up: bool) -> dict:
    steps = raw["resolutions"][resolution]["steps"]
    return next(s for s in steps if s["kind"] == kind and (s["to_bps"] > s["from_bps"]) == up)


@pytest.mark.parametrize("up", [True, False])
def test_step_is_followed_with_the_calibrated_lag(raw: dict, up: bool) -> None:
    resolution = "640x360"
    cal = EncoderCalibration.load(resolution)
    step = _measured_step(raw, resolution, "step", up)
    m = VideoEncoderModel(
        cal, fps=FPS, noise=False, initial_target_bps=step["from_bps"], drop_frames=False
    )
    run(m, 150)
    m.set_target(step["to_bps"], frame_ms(150))
    sizes, keys = run(m, 210, start=150)
    assert not keys.any()
    new = cal.interpolate(step["to_bps"])["achieved_bps"]
    old = cal.interpolate(step["from_bps"])["achieved_bps"]
    first_100ms = rate_bps(sizes[:3])
    if up:
        assert old * 0.9 < first_100ms < old + 0.5 * (new - old)
    else:
        assert new + 0.5 * (old - new) < first_100ms < old * 1.1
    # Settles on the new rate ...
    assert rate_bps(sizes[-60:]) == pytest.approx(new, rel=0.03)
    # ... with a transient as large as libvpx's (bytes over / under the new rate, in ms of it).
    new_bytes = new / 8 / FPS
    excess_ms = float((sizes - new_bytes).sum() / new_bytes * FRAME_MS)
    assert np.sign(excess_ms) == np.sign(step["excess_ms"])
    assert excess_ms == pytest.approx(step["excess_ms"], rel=0.5, abs=60)
    # and the per-second rates stay close to the measured ones.
    model_1s = [rate_bps(sizes[j : j + 30]) for j in range(0, 180, 30)]
    rel = np.abs(np.array(model_1s) / np.array(step["rate_1s_bps"]) - 1)
    assert rel.max() < 0.25


def test_a_long_spell_at_the_floor_leaves_a_debt_as_libvpx_does(raw: dict) -> None:
    resolution = "640x360"
    cal = EncoderCalibration.load(resolution)
    step = _measured_step(raw, resolution, "after_floor", True)
    m = VideoEncoderModel(
        cal, fps=FPS, noise=False, initial_target_bps=step["from_bps"], drop_frames=False
    )
    hold = round(step["hold_ms"] / FRAME_MS)
    run(m, hold)
    assert m.buffer_bits < 0
    m.set_target(step["to_bps"], frame_ms(hold))
    sizes, _ = run(m, 180, start=hold)
    new = cal.interpolate(step["to_bps"])["achieved_bps"]
    model_1s = np.array([rate_bps(sizes[j : j + 30]) for j in range(0, 180, 30)])
    measured_1s = np.array(step["rate_1s_bps"])
    # Both stay far below the new target for seconds ...
    assert model_1s[:3].max() < 0.6 * new and measured_1s[:3].max() < 0.6 * new
    # ... and agree second by second.
    assert np.abs(model_1s / measured_1s - 1).mean() < 0.2


def test_live_retarget_changes_rate_without_a_keyframe() -> None:
    m = VideoEncoderModel(fps=FPS, seed=1, retarget="live", drop_frames=False)
    m.set_target(600_000, 0)
    run(m, 90)
    m.set_target(1_800_000, frame_ms(90))
    _, keys = run(m, 90, start=90)
    assert not keys.any()
    assert m.target_bps == 1_800_000


def test_reopen_retarget_is_aiortcs_keyframe_on_a_change_over_ten_percent(
    cal: EncoderCalibration,
) -> None:
    m = VideoEncoderModel(cal, fps=FPS, noise=False, retarget="reopen", drop_frames=False)
    m.set_target(1_040_000, 0)
    m.set_target(1_000_000, 0)  # before the first frame every target is taken
    assert m.target_bps == 1_000_000
    run(m, 90)
    m.set_target(1_080_000, frame_ms(90))  # within 10 %: ignored, as aiortc does
    assert m.target_bps == 1_000_000
    assert not m.encode(frame_ms(90))[1]
    m.set_target(1_500_000, frame_ms(91))
    size, is_key = m.encode(frame_ms(91))
    fig = cal.interpolate(1_500_000)
    assert is_key
    assert size == round(fig["achieved_bps"] / 8 / FPS * fig["first_keyframe_ratio"])
    assert m.buffer_bits < cal.buffer_initial_s * 1_500_000


def test_model_matches_libvpx_on_the_gcc_like_sawtooth(raw: dict) -> None:
    for resolution, res in raw["resolutions"].items():
        saw = res["model"]["sawtooth_validation"]
        assert saw["model"]["mean_abs_rel_error"] < 0.06, resolution
        assert saw["model"]["mean_abs_rel_error"] < saw["instant_baseline"]["mean_abs_rel_error"]


# -- cost ------------------------------------------------------------------------------------
def test_encode_costs_a_few_microseconds() -> None:
    m = VideoEncoderModel(fps=FPS, keyframe_interval_s=2.0, seed=1, drop_frames=False)
    m.set_target(1_000_000, 0)
    n = 30_000
    t0 = time.perf_counter()
    for i in range(n):
        m.encode(i * FRAME_MS)
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    assert per_call_us < 20.0


def test_calibration_is_a_frozen_dataclass(cal: EncoderCalibration) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        cal.floor_bps = 1.0  # type: ignore[misc]
