"""Stage ``prefs``: pair selection (table-driven) and the file it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.stages.prefs import (
    SKIP_SMALL_MARGIN,
    SKIP_TIE,
    SKIP_TOO_FEW,
    PreferencePair,
    PrefsArguments,
    plan,
    run,
    select_pair,
)


def record(rewards: list[float], qid: str = "q1") -> dict:
    return {
        "id": qid,
        "question": f"question {qid}",
        "gold_answer": "5",
        "trajectories": [{"output": f"out{i}", "reward": r} for i, r in enumerate(rewards)],
    }


# rewards, min_margin -> (better output, worse output) or skip reason
CASES = [
    ([1.0, 0.2], 0.1, ("out0", "out1")),
    ([0.2, 1.0], 0.1, ("out1", "out0")),
    ([0.5, 1.5, -0.3, 0.9], 0.1, ("out1", "out2")),
    ([1.0, 1.0, 0.0, 0.0], 0.1, ("out0", "out2")),  # ties inside a group: the first of each
    ([0.7, 0.7, 0.7], 0.0, SKIP_TIE),
    ([0.7, 0.7], 0.5, SKIP_TIE),
    ([1.0, 0.95], 0.1, SKIP_SMALL_MARGIN),
    ([1.0, 0.8], 0.1, ("out0", "out1")),
    ([1.0, 0.99], 0.0, ("out0", "out1")),  # min_margin 0: any strict difference makes a pair
    ([1.0], 0.0, SKIP_TOO_FEW),
    ([], 0.0, SKIP_TOO_FEW),
]


@pytest.mark.parametrize("rewards,min_margin,expected", CASES)
def test_select_pair(rewards, min_margin, expected):
    result = select_pair(record(rewards), min_margin)
    if isinstance(expected, str):
        assert result == expected
        return
    assert isinstance(result, PreferencePair)
    assert (result.better, result.worse) == expected
    assert result.better_reward == max(rewards) and result.worse_reward == min(rewards)
    assert result.margin == pytest.approx(max(rewards) - min(rewards))
    assert result.id == "q1" and result.question == "question q1"


def test_margin_boundary_is_inclusive():
    # 0.1 written as a difference of exactly representable values
    assert isinstance(select_pair(record([0.625, 0.5]), 0.125), PreferencePair)
    assert select_pair(record([0.625, 0.5]), 0.126) == SKIP_SMALL_MARGIN


def write_rollouts(path: Path, records: list[dict], torn_tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + torn_tail)


def test_run_writes_pairs_and_summary(tmp_path):
    rollouts = tmp_path / "rl_rollouts.jsonl"
    write_rollouts(
        rollouts,
        [
            record([1.2, 0.1, 0.4], "a"),
            record([0.3, 0.3], "b"),  # tie
            record([0.30, 0.32], "c"),  # small margin
            record([0.9], "d"),  # too few
            record([-0.2, 0.8], "e"),
        ],
        torn_tail='{"id": "f", "question": "torn',  # a killed rollouts run's unfinished line
    )
    out = tmp_path / "prefs" / "preferences.jsonl"
    summary = run(PrefsArguments(rollouts_file=str(rollouts), preferences_file=str(out), min_margin=0.1))
    assert summary["questions"] == 5
    assert summary["pairs_written"] == 2
    assert summary["skipped"] == {"tie": 1, "small_margin": 1, "too_few_trajectories": 1}
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["a", "e"]
    for line in lines:
        assert set(line) == {"id", "question", "better", "worse", "better_reward", "worse_reward", "margin"}
        assert line["margin"] == pytest.approx(line["better_reward"] - line["worse_reward"])
        assert line["margin"] >= 0.1
    assert lines[0]["better"] == "out0" and lines[0]["worse"] == "out1"
    assert lines[1]["better"] == "out1" and lines[1]["worse"] == "out0"
    assert summary["mean_margin"] == pytest.approx((1.1 + 1.0) / 2)


def test_run_overwrites_previous_output(tmp_path):
    rollouts = tmp_path / "r.jsonl"
    out = tmp_path / "p.jsonl"
    out.write_text("stale\n")
    write_rollouts(rollouts, [record([1.0, 0.0])])
    run(PrefsArguments(rollouts_file=str(rollouts), preferences_file=str(out), min_margin=0.0))
    assert len(out.read_text().splitlines()) == 1
    assert not (tmp_path / "p.jsonl.tmp").exists()


def test_missing_rollouts_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the rollouts stage first"):
        run(PrefsArguments(rollouts_file=str(tmp_path / "none.jsonl"), preferences_file=str(tmp_path / "p.jsonl")))


def test_corrupt_complete_line_names_the_line(tmp_path):
    rollouts = tmp_path / "r.jsonl"
    rollouts.write_text(json.dumps(record([1.0, 0.0])) + "\nnot json\n")
    with pytest.raises(ValueError, match=r"r.jsonl:2"):
        run(PrefsArguments(rollouts_file=str(rollouts), preferences_file=str(tmp_path / "p.jsonl")))


def test_negative_min_margin_rejected():
    with pytest.raises(ValueError, match="min_margin"):
        PrefsArguments(min_margin=-0.1)


def test_cli_dry_run_and_run(tmp_path):
    rollouts = tmp_path / "r.jsonl"
    write_rollouts(rollouts, [record([1.0, 0.0], "a"), record([0.5, 0.5], "b")])
    recipe = tmp_path / "prefs.yaml"
    recipe.write_text(f"rollouts_file: {rollouts}\npreferences_file: {tmp_path / 'p.jsonl'}\nmin_margin: 0.5\n")
    dry = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "prefs", "--config", str(recipe), "--dry-run", "--min_margin", "0.25"],
        capture_output=True, text=True, timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["min_margin"] == 0.25 and planned["dry_run"] is True
    assert not (tmp_path / "p.jsonl").exists()
    real = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "prefs", "--config", str(recipe)],
        capture_output=True, text=True, timeout=120,
    )
    assert real.returncode == 0, real.stderr
    assert "1 pairs" in real.stdout
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 1


def test_plan_names_the_files():
    p = plan(PrefsArguments(rollouts_file="x.jsonl", preferences_file="y.jsonl", min_margin=0.2))
    assert p["rollouts_file"] == "x.jsonl" and p["preferences_file"] == "y.jsonl" and p["min_margin"] == 0.2
