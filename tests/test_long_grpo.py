"""experiments/long_grpo.py: the agreement measure of a checkpoint's samples (hand-worked)."""

from __future__ import annotations

import pytest

from experiments.long_grpo import agreement
from trainer.records import RolloutRecord, TrajectoryRecord


def _group(qid: str, answers: list[str | None], gold: str) -> RolloutRecord:
    return RolloutRecord(
        id=qid,
        question=f"question {qid}",
        gold_answer=gold,
        trajectories=[
            TrajectoryRecord(output=f"#### {a}", reward=0.0, final_answer=a)  # as a majority-vote run writes them
            for a in answers
        ],
        reward_mode="majority",
    )


def test_agreement_counts_unanimous_and_unanimous_wrong_groups() -> None:
    records = [
        _group("a", ["5", "5", "5", "5"], "5.0"),  # unanimous, right (5 is the gold 5.0)
        _group("b", ["7", "7", "7", "7"], "5"),  # unanimous, wrong
        _group("c", ["5", "6", None, "5"], "5"),  # 3 distinct answers (None is one)
        _group("d", [None, None, None, None], "5"),  # unanimous on no answer: wrong
    ]
    got = agreement(records)
    assert got == {"groups": 4, "unanimous": 0.75, "unanimous_wrong": 0.5, "distinct_answers_mean": 1.5}


def test_agreement_of_nothing_is_zero() -> None:
    assert agreement([]) == {"groups": 0, "unanimous": 0.0, "unanimous_wrong": 0.0, "distinct_answers_mean": 0.0}


def _result(seed: int, curve: dict[int, float], steps: int = 100, every: int = 50) -> dict:
    points = [
        {"step": s, "dev_accuracy": a, "unanimous_wrong": 0.0, "distinct_answers_mean": 4.0} for s, a in curve.items()
    ]
    return {"seed": seed, "steps": steps, "every": every, "rows": {"majority": {"curve": points}}}


def test_seeds_combine_into_mean_min_max_per_step_and_a_collapse_step() -> None:
    from experiments.long_grpo_seeds import StepStats, combine, first_collapse, format_table

    results = [_result(0, {0: 0.40, 50: 0.38, 100: 0.30}), _result(1, {0: 0.44, 50: 0.36, 100: 0.34})]
    stats = combine(results, "dev_accuracy")["majority"]
    # step 0: (0.40 + 0.44) / 2 = 0.42; step 50: 0.37 in [0.36, 0.38]; step 100: 0.32 in [0.30, 0.34]
    assert [s.step for s in stats] == [0, 50, 100]
    assert stats[1] == StepStats(50, mean=pytest.approx(0.37), low=0.36, high=0.38, n=2)
    # 0.42 - 0.37 = 5 points at step 50 (a collapse at 5 points), 0.42 - 0.32 = 10 at step 100
    assert first_collapse(stats, 5.0) == 50
    assert first_collapse(stats, 6.0) == 100
    assert first_collapse(stats, 11.0) is None
    table = format_table(results)
    assert "| majority: dev accuracy % | 42.0 [40.0, 44.0] | 37.0 [36.0, 38.0] | 32.0 [30.0, 34.0] |" in table


def test_seeds_of_different_schedules_are_not_averaged() -> None:
    from experiments.long_grpo_seeds import combine

    with pytest.raises(ValueError, match="different schedules"):
        combine([_result(0, {0: 0.4}, steps=100), _result(1, {0: 0.4}, steps=450)], "dev_accuracy")
