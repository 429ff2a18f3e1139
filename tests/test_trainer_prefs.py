"""Stage ``prefs``: pair selection (table-driven) and the file it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.records import PreferenceRecord, RolloutRecord, RunInfo
from trainer.stages.prefs import (
    SKIP_SMALL_MARGIN,
    SKIP_TIE,
    SKIP_TOO_FEW,
    PrefsArguments,
    plan,
    run,
    select_pair,
)


def record(rewards: list[float], qid: str = "q1", **extra) -> dict:
    return {
        "id": qid,
        "question": f"question {qid}",
        "gold_answer": "5",
        "trajectories": [{"output": f"out{i}", "reward": r} for i, r in enumerate(rewards)],
        **extra,
    }


def rollout(rewards: list[float], qid: str = "q1") -> RolloutRecord:
    return RolloutRecord.model_validate(record(rewards, qid))


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
]


@pytest.mark.parametrize("rewards,min_margin,expected", CASES)
def test_select_pair(rewards, min_margin, expected):
    result = select_pair(rollout(rewards), min_margin)
    if isinstance(expected, str):
        assert result == expected
        return
    assert isinstance(result, PreferenceRecord)
    assert (result.better, result.worse) == expected
    assert result.better_reward == max(rewards) and result.worse_reward == min(rewards)
    assert result.margin == pytest.approx(max(rewards) - min(rewards))
    assert result.id == "q1" and result.question == "question q1"


def test_margin_boundary_is_inclusive():
    # 0.1 written as a difference of exactly representable values
    assert isinstance(select_pair(rollout([0.625, 0.5]), 0.125), PreferenceRecord)
    assert select_pair(rollout([0.625, 0.5]), 0.126) == SKIP_SMALL_MARGIN


def test_a_record_without_trajectories_is_refused(tmp_path):
    rollouts = tmp_path / "r.jsonl"
    write_rollouts(rollouts, [record([1.0, 0.0], "a"), record([], "b")])
    with pytest.raises(ValueError, match=r"r.jsonl:2: not a valid RolloutRecord"):
        run(PrefsArguments(rollouts_file=str(rollouts), preferences_file=str(tmp_path / "p.jsonl")))


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
        assert set(line) == {
            "id",
            "question",
            "better",
            "worse",
            "better_reward",
            "worse_reward",
            "margin",
            "reward_mode",
            "label_free",
        }
        assert (line["reward_mode"], line["label_free"]) == ("regime_w", False)  # what rollouts without a mode had
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl", "p.run.json", "r.jsonl"]  # no temp file left


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
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert planned["min_margin"] == 0.25 and planned["dry_run"] is True
    assert not (tmp_path / "p.jsonl").exists()
    real = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "prefs", "--config", str(recipe)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert real.returncode == 0, real.stderr
    assert "1 pairs" in real.stdout
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 1


def test_plan_names_the_files():
    p = plan(PrefsArguments(rollouts_file="x.jsonl", preferences_file="y.jsonl", min_margin=0.2))
    assert p["rollouts_file"] == "x.jsonl" and p["preferences_file"] == "y.jsonl" and p["min_margin"] == 0.2


# ---------------------------------------------------------------------------------- reward controls


def texts_record(qid: str, outputs: list[str], rewards: list[float], **extra) -> dict:
    return {
        "id": qid,
        "question": f"question {qid}",
        "gold_answer": "#### 5",
        "trajectories": [{"output": o, "reward": r} for o, r in zip(outputs, rewards)],
        **extra,
    }


OUTPUTS = ["2+3=5\n#### 5", "2+3=6\n#### 6", "2+3=6\n#### 6", "no answer here"]
SERVICE_REWARDS = [0.2, 0.9, 0.5, 0.1]  # the service (made up) prefers a wrong answer


@pytest.mark.parametrize(
    "mode,better,worse,label_free",
    [
        (None, OUTPUTS[1], OUTPUTS[3], False),  # the rollouts' own (regime_w) rewards
        ("regime_w", OUTPUTS[1], OUTPUTS[3], False),
        ("correctness", OUTPUTS[0], OUTPUTS[1], False),  # recomputed from the gold: 1, 0, 0, 0
        ("majority", OUTPUTS[1], OUTPUTS[0], True),  # recomputed by vote: 6 wins twice
    ],
)
def test_prefs_rank_by_the_reward_asked_for(tmp_path, mode, better, worse, label_free):
    rollouts = tmp_path / "r.jsonl"
    write_rollouts(rollouts, [texts_record("a", OUTPUTS, SERVICE_REWARDS, scorer={"name": "regime-w"})])
    out = tmp_path / "p.jsonl"
    summary = run(PrefsArguments(rollouts_file=str(rollouts), preferences_file=str(out), min_margin=0.0, reward=mode))
    [pair] = [json.loads(x) for x in out.read_text().splitlines()]
    assert (pair["better"], pair["worse"]) == (better, worse)
    expected_mode = mode or "regime_w"
    assert (pair["reward_mode"], pair["label_free"]) == (expected_mode, label_free)
    info = RunInfo.model_validate_json((tmp_path / "p.run.json").read_text())
    assert (info.stage, info.reward_mode, info.label_free) == ("prefs", expected_mode, label_free)
    assert info.scorer == ({"name": "regime-w"} if expected_mode == "regime_w" else None)
    assert info.summary["pairs_written"] == 1 and summary["run_info"] == str(tmp_path / "p.run.json")


def test_prefs_keep_the_reward_of_control_rollouts_and_refuse_mismatches(tmp_path):
    rollouts = tmp_path / "r.jsonl"
    write_rollouts(rollouts, [texts_record("a", OUTPUTS, [1.0, 0.0, 0.0, 0.0], reward_mode="correctness")])
    out = tmp_path / "p.jsonl"
    assert run(PrefsArguments(rollouts_file=str(rollouts), preferences_file=str(out)))["reward"] == "correctness"
    with pytest.raises(ValueError, match="needs rollouts scored by the service"):
        run(PrefsArguments(rollouts_file=str(rollouts), preferences_file=str(out), reward="regime_w"))
    # regime_w rollouts scored WITH the gold cannot make label-free pairs
    write_rollouts(rollouts, [texts_record("a", OUTPUTS, SERVICE_REWARDS)])
    with pytest.raises(ValueError, match="scored WITH the gold"):
        run(PrefsArguments(rollouts_file=str(rollouts), preferences_file=str(out), reward="regime_w", label_free=True))
    # a file mixing rewards is refused
    write_rollouts(
        rollouts,
        [
            texts_record("a", OUTPUTS, SERVICE_REWARDS),
            texts_record("b", OUTPUTS, [0.0, 1.0, 1.0, 0.0], reward_mode="majority", label_free=True),
        ],
    )
    with pytest.raises(ValueError, match="mixes rollouts scored with different rewards"):
        run(PrefsArguments(rollouts_file=str(rollouts), preferences_file=str(out)))
    with pytest.raises(ValueError, match="label_free applies"):
        PrefsArguments(reward="majority", label_free=True)
    with pytest.raises(ValueError, match="reward must be one of"):
        PrefsArguments(reward="vibes")
