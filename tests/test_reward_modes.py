"""The reward modes (trainer/reward_modes.py): correctness and the majority vote, by hand; the
label-free rule; the one dispatch from a mode to its scorer, and each scorer (the service's against
the loopback flaky server)."""

from __future__ import annotations

import pytest

from shared_schemas.answer import parse_answer
from tests.support.flaky_server import FlakyServer
from trainer.configs import RewardServiceArguments
from trainer.errors import RewardInputError, TrainerError
from trainer.reward_client import ClientSettings
from trainer.reward_client.settings import DEFAULT_BATCH_ITEMS
from trainer.reward_modes import (
    REWARD_MODES,
    CorrectnessScorer,
    MajorityScorer,
    ScoreGroup,
    check_reward,
    check_reward_mode,
    correctness_rewards,
    majority_rewards,
    make_scorer,
    reward_label_free,
    scorer_from_args,
)
from trainer.rewards import ServiceScorer

Q = "Tom has 3 apples and buys 4 more. How many apples?"


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


def test_the_label_free_rule() -> None:
    """majority never reads a gold, correctness always does, regime_w unless told label_free."""
    table = {
        ("regime_w", False): False,
        ("regime_w", True): True,
        ("correctness", False): False,
        ("correctness", True): False,
        ("majority", False): True,
        ("majority", True): True,
    }
    assert {key: reward_label_free(*key) for key in table} == table


def test_check_reward_refuses_label_free_for_a_control() -> None:
    assert check_reward("regime_w", True) == "regime_w"
    assert check_reward("majority", False) == "majority"
    with pytest.raises(ValueError, match="label_free applies to reward 'regime_w' only, not 'majority'"):
        check_reward("majority", True)
    with pytest.raises(ValueError, match="reward must be one of"):
        check_reward("vote", False)


@pytest.mark.parametrize(
    ("mode", "kind", "label_free"),
    [("regime_w", ServiceScorer, False), ("correctness", CorrectnessScorer, False), ("majority", MajorityScorer, True)],
)
def test_one_dispatch_from_mode_to_scorer(mode: str, kind: type, label_free: bool) -> None:
    scorer = make_scorer(mode, base_url="http://127.0.0.1:9")  # nothing is sent: no request is made
    assert type(scorer) is kind and scorer.mode == mode and scorer.label_free is label_free
    from_args = scorer_from_args(RewardServiceArguments(reward_url="http://127.0.0.1:9", reward=mode))
    assert type(from_args) is kind and from_args.label_free is label_free
    assert make_scorer("regime_w", label_free=True).label_free is True
    with pytest.raises(ValueError, match="label_free applies"):
        make_scorer("correctness", label_free=True)


def test_correctness_scorer_by_hand() -> None:
    texts = ["so #### 72", "The answer is 71.", "no number here"]
    [group] = CorrectnessScorer().score([ScoreGroup(id="q1", question=Q, gold="#### 72", texts=texts)])
    assert [s.reward for s in group.scores] == [1.0, 0.0, 0.0]
    assert [s.correctness for s in group.scores] == [1.0, 0.0, 0.0]
    assert [s.final_answer for s in group.scores] == ["72", "71", None]
    assert [s.format_ok for s in group.scores] == [parse_answer(t).format_ok for t in texts]  # the one parse
    assert group.consensus_answer is None and all(s.s_wm is None for s in group.scores)


def test_correctness_scorer_names_the_question_without_a_gold() -> None:
    groups = [ScoreGroup(id="q1", question=Q, gold="7", texts=["#### 7"]), ScoreGroup("q2", Q, None, ["#### 7"])]
    with pytest.raises(RewardInputError, match=r"question 'q2': reward 'correctness' needs a gold answer") as raised:
        CorrectnessScorer().score(groups)
    assert isinstance(raised.value, ValueError) and isinstance(raised.value, TrainerError)


def test_majority_scorer_votes_within_each_group_and_ignores_the_gold() -> None:
    scored = MajorityScorer().score(
        [
            ScoreGroup(id="a", question=Q, gold="999", texts=["#### 12", r"\boxed{12}", "#### 13"]),
            ScoreGroup(id="b", question="Another?", gold=None, texts=["#### 13", "#### 14", "#### 14", "none"]),
        ]
    )
    assert [[s.reward for s in g.scores] for g in scored] == [[1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]]
    assert all(s.correctness is None for g in scored for s in g.scores)


def test_service_scorer_sends_the_gold_unless_label_free(srv: FlakyServer) -> None:
    group = ScoreGroup(id="a", question=Q, gold="7", texts=["#### 7", "#### 8"], num_tokens=[2, 2])
    with make_scorer("regime_w", base_url=srv.url) as labelled:
        [scored] = labelled.score([group])
        assert [s.correctness for s in scored.scores] == [1.0, 0.0]
        assert labelled.info is not None and labelled.info["name"]
    with make_scorer("regime_w", label_free=True, base_url=srv.url) as label_free:
        assert isinstance(label_free, ServiceScorer) and label_free.items([group])[0].gold_answer is None
        [scored] = label_free.score([group])
        assert [s.correctness for s in scored.scores] == [None, None]
    assert srv.stats()["ids_per_request"] == [["a"], ["a"]]


def test_service_scorer_takes_the_clients_defaults_and_overrides() -> None:
    url = "http://127.0.0.1:9"
    assert ServiceScorer(base_url=url).batch_items == DEFAULT_BATCH_ITEMS == ClientSettings().batch_items
    assert ServiceScorer(base_url=url, batch_items=4).batch_items == 4
    assert ServiceScorer(ClientSettings(base_url=url, batch_items=5)).batch_items == 5
    assert ServiceScorer(RewardServiceArguments(reward_url=url, reward_batch_items=6)).batch_items == 6
    with ServiceScorer(RewardServiceArguments(reward_url=url, reward_batch_items=6), batch_items=3) as scorer:
        assert scorer.client.batch_items == 3 and scorer.client.timeout_s == ClientSettings().timeout_s
