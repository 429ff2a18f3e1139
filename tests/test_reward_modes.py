"""The reward controls (trainer/reward_modes.py): correctness and the majority vote, by hand."""

from __future__ import annotations

import pytest

from trainer.configs import RewardServiceArguments
from trainer.reward_modes import REWARD_MODES, check_reward_mode, correctness_rewards, majority_rewards


def test_modes_are_the_three_of_the_design() -> None:
    assert REWARD_MODES == ("regime_w", "correctness", "majority")
    with pytest.raises(ValueError, match="regime_w, correctness, majority"):
        check_reward_mode("vote")


def test_correctness_reads_every_marker_against_the_gold() -> None:
    texts = ["so #### 72", r"\boxed{72.0}", "The answer is 71.", "no number here"]
    assert correctness_rewards(texts, "#### 72") == [1.0, 1.0, 0.0, 0.0]
    assert correctness_rewards(texts, "72") == [1.0, 1.0, 0.0, 0.0]


def test_correctness_without_gold_is_an_error_not_a_zero() -> None:
    with pytest.raises(ValueError, match="needs a gold answer"):
        correctness_rewards(["#### 1"], None)
    with pytest.raises(ValueError, match="needs a gold answer"):
        correctness_rewards(["#### 1"], "  ")


def test_majority_rewards_the_most_frequent_answer() -> None:
    # 3 says 12 (one of them as 12.0), 1 says 13, one has no answer at all
    texts = ["#### 12", r"\boxed{12.0}", "#### 13", "The answer is 12.", "I give up"]
    assert majority_rewards(texts) == [1.0, 1.0, 0.0, 1.0, 0.0]


def test_majority_ties_all_win_and_no_answers_never_win() -> None:
    assert majority_rewards(["#### 1", "#### 2"]) == [1.0, 1.0]
    assert majority_rewards(["#### 1", "#### 1", "#### 2", "#### 2", "#### 3"]) == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert majority_rewards(["nothing", "still nothing"]) == [0.0, 0.0]
    assert majority_rewards([]) == []


def test_recipe_fields_are_checked() -> None:
    assert RewardServiceArguments().reward == "regime_w"
    assert RewardServiceArguments(reward="majority").label_free is False
    with pytest.raises(ValueError, match="reward must be one of"):
        RewardServiceArguments(reward="votes")
    with pytest.raises(ValueError, match="label_free applies to reward 'regime_w' only"):
        RewardServiceArguments(reward="correctness", label_free=True)
    assert RewardServiceArguments(label_free=True).label_free is True
