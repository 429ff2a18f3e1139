"""Where the TRL rewards find the gold (issue 22 item 6): TRL's math data sets keep it in a ``solution``
column (a worked solution ending in ``\\boxed{N}``), which was scored label-free without a word. Called
as TRL 1.16's ``GRPOTrainer._calculate_rewards`` calls a reward function (every data set column but
``prompt`` as a keyword, plus ``completion_ids``, ``trainer_state``, ``log_metric``, ``log_extra``),
against the loopback test server (its toy scorer computes correctness from the gold it receives)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.support.flaky_server import FlakyServer
from trainer.rewards import CorrectnessReward, RegimeWReward, gold_column, read_batch

Q = "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many in all?"
BOXED = "In May she sold 48/2 = 24. Altogether 48 + 24 = 72. The answer is $\\boxed{72}$."
RIGHT, WRONG = "48 + 24 = 72. The answer is \\boxed{72}.", "48 + 20 = 68. The answer is \\boxed{68}."


def trl_call(reward: Any, completions: list[str], **columns: list[Any]) -> list[float | None]:
    """The keywords TRL 1.16 passes (grpo_trainer.py, ``_calculate_rewards``)."""
    logged: dict[str, float] = {}
    return reward(
        prompts=[[{"role": "user", "content": Q}]] * len(completions),
        completions=[[{"role": "assistant", "content": c}] for c in completions],
        completion_ids=[[1] * len(c.split()) for c in completions],
        trainer_state=None,
        log_metric=logged.__setitem__,
        log_extra=lambda key, values: None,
        **columns,
    )


@pytest.mark.parametrize("solution", [BOXED, "48/2 = 24\n48 + 24 = 72\n#### 72", "72"])
def test_the_gold_is_read_from_a_solution_column(srv: FlakyServer, solution: str) -> None:
    with RegimeWReward(base_url=srv.url) as reward:
        trl_call(reward, [RIGHT, WRONG], solution=[solution] * 2)
        assert [s.correctness for s in reward.last_scores] == [1.0, 0.0]


def test_gold_columns_in_order_and_an_unreadable_solution_is_label_free() -> None:
    assert gold_column({"solution": ["x"], "answer": ["#### 1"]}) == "answer"
    assert gold_column({"solution": ["x"], "gold_answer": ["1"]}) == "gold_answer"
    assert gold_column({"solution": None, "problem": ["q"]}) is None
    batch = read_batch([Q, Q], [RIGHT, WRONG], {"solution": [BOXED, "no number here at all"]})
    assert batch.golds == ["72", None]
    assert CorrectnessReward()(prompts=[Q], completions=[RIGHT], solution=[BOXED]) == [1.0]


def test_no_gold_column_is_scored_label_free_with_one_warning(
    srv: FlakyServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trainer.rewards")
    with RegimeWReward(base_url=srv.url) as reward:
        for _ in range(2):
            trl_call(reward, [RIGHT, WRONG], problem=[Q, Q], ground_truth=["72", "72"])
        assert [s.correctness for s in reward.last_scores] == [None, None]
    warnings = [r.getMessage() for r in caplog.records if "LABEL-FREE" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once per reward, not per step
    assert "gold_answer / answer / solution" in warnings[0] and "ground_truth, problem" in warnings[0]
    assert "log_metric" not in warnings[0]  # TRL's own keywords are not data set columns


def test_label_free_on_purpose_says_nothing(srv: FlakyServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="trainer.rewards")
    with RegimeWReward(base_url=srv.url, label_free=True) as reward:
        trl_call(reward, [RIGHT], solution=[BOXED])
        assert reward.last_scores[0].correctness is None  # the gold is left out, as asked
    with RegimeWReward(base_url=srv.url) as reward:
        trl_call(reward, [RIGHT], gold_answer=["72"])
    assert not [r for r in caplog.records if "LABEL-FREE" in r.getMessage()]
