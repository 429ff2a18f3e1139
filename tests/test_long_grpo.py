"""experiments/long_grpo.py: the agreement measure of a checkpoint's samples (hand-worked)."""

from __future__ import annotations

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
