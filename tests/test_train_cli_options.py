"""``loki train`` options that shape training: reward weights, exploration, the clone's fit.
Bad values end with one clear line and exit status 2, before any training starts."""

from __future__ import annotations

from argparse import Namespace

import pytest

from loki.cli import main
from loki.train.cli import reward_from_args
from loki.train.env import Reward

ONLINE_IO = ("--logs", "l", "--from", "m.npz")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "rl", "--change-weight", "-1"], "--change-weight must be"),
        (["train", "loki", "--stall-weight", "nan"], "--stall-weight must be"),
        (["train", "hybrid", "--change-weight", "inf"], "--change-weight must be"),
        (["train", "clone", "--small-move-eps", "0"], "--small-move-eps must be"),
        (["train", "clone", "--small-move-eps", "-0.5"], "--small-move-eps must be"),
        (["train", "rl", "--balance-families"], "--balance-families is for"),
        (["train", "hybrid", "--synthetic"], "--synthetic is for"),
        (["train", "rl", "--path-changes", "1.5"], "--path-changes must be a share"),
        (["train", "clone", "--path-changes", "-0.1"], "--path-changes must be a share"),
        (["train", "loki", "--bursty", "2"], "--bursty must be a share"),
        (["train", "rl", "--bursty", "nan"], "--bursty must be a share"),
        (["train", "risk", "--bursty", "-1"], "--bursty must be a share"),
        (["train", "online", "--bursty", "0.5", *ONLINE_IO], "--bursty is for"),
        (["train", "hybrid", "--init", "m.npz"], "--init is for"),
        (["train", "rl", "--anchor-gcc"], "--anchor-gcc is for"),
        (["train", "rl", "--init", "no-such-model.npz"], "no model file"),
        (["train", "loki", "--init", "no-such-model.npz"], "no model file"),
        (
            [*("train", "online", "--method", "awr"), "--change-weight", "-1", *ONLINE_IO],
            "--change-weight must be",
        ),
        (
            ["train", "online", "--change-weight", "0.1", *ONLINE_IO],
            "--change-weight: for --method awr",
        ),
    ],
)
def test_bad_training_options_are_refused_before_training(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    assert main([*argv, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("model", ["clone", "rl", "loki", "hybrid"])
def test_a_malformed_training_trace_is_refused_before_anything_is_written(
    model: str, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    traces = tmp_path / "family"
    traces.mkdir()
    (traces / "good.mahi").write_text("\n".join(str(t) for t in range(1, 1001)) + "\n")
    (traces / "bad.mahi").write_text("1\n2\n7\n5\n")
    argv = ["train", model, "--traces", str(traces), "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bad.mahi: line 4" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_reward_weights_from_the_command_line_replace_only_what_is_given() -> None:
    default = Reward()
    assert reward_from_args(Namespace(stall_weight=None, change_weight=None)) == default
    got = reward_from_args(Namespace(stall_weight=12.0, change_weight=0.0))
    assert (got.stall, got.change) == (12.0, 0.0)
    assert (got.delay, got.loss) == (default.delay, default.loss)


def test_split_seed_fixes_the_validation_links_across_run_seeds() -> None:
    from loki.train.ppo import PpoArgs, seed_text, split_traces, validation_specs

    def links(args: PpoArgs):
        fit, val = split_traces(args)
        return fit, val, validation_specs(args, val)

    same_a = links(PpoArgs(seed=0))
    same_b = links(PpoArgs(seed=3, split_seed=0))
    other = links(PpoArgs(seed=3))
    assert same_a == same_b
    assert other[1] != same_a[1] and other[2] != same_a[2]
    assert seed_text(PpoArgs(seed=3, split_seed=0)).endswith("from seed 0.")
    assert seed_text(PpoArgs(seed=3)) == "Seed 3."
