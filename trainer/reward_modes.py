"""The reward controls: which reward scores a policy's samples (DESIGN §5, "Reward controls").

- ``regime_w``    — the Regime W service over HTTP (``label_free`` leaves the gold out even when the
  data set has it);
- ``correctness`` — 1 when the sample's answer equals the gold, else 0: the answer contract of
  ``shared_schemas.answer``, no service;
- ``majority``    — label-free vote among the policy's own samples of the same question (test-time
  RL's reward): 1 when the sample's answer is the group's most frequent answer, else 0.

The two controls are pure functions over one question's group of samples, so every stage (rollouts,
prefs, GRPO) and every framework integration computes them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

from shared_schemas.answer import answers_equal, extract_answer, gold_answer

__all__ = ["RewardMode", "REWARD_MODES", "check_reward_mode", "correctness_rewards", "majority_rewards"]

RewardMode = Literal["regime_w", "correctness", "majority"]
REWARD_MODES: tuple[str, ...] = get_args(RewardMode)


def check_reward_mode(mode: str) -> RewardMode:
    """``mode`` if it names a reward control, else a ``ValueError`` listing the choices."""
    if mode not in REWARD_MODES:
        raise ValueError(f"reward must be one of {', '.join(REWARD_MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


def correctness_rewards(completions: Sequence[str], gold: str | None) -> list[float]:
    """1.0 per completion whose extracted answer equals the gold (``#### 72`` or ``72``), else 0.0.

    A ``ValueError`` when ``gold`` is missing or unreadable: correctness needs a label.
    """
    if gold is None or not str(gold).strip():
        raise ValueError("reward 'correctness' needs a gold answer; use 'majority' or 'regime_w' label-free")
    target = gold_answer(str(gold))
    if target is None:
        raise ValueError(f"gold answer {gold!r} has no readable value")
    return [1.0 if answers_equal(extract_answer(text), target) else 0.0 for text in completions]


def majority_rewards(completions: Sequence[str]) -> list[float]:
    """1.0 per completion whose answer is the most frequent answer of the group, else 0.0.

    Answers compare with ``answers_equal``; a completion with no readable answer never votes and
    never wins. Ties between equally frequent answers all win (every tied answer is "a" mode), so
    a group of all-different answers rewards every readable one equally — the vote carries no
    preference there, which is what a majority vote means.
    """
    answers = [extract_answer(text) for text in completions]
    classes: list[tuple[str, int]] = []  # representative answer, count
    member_of: list[int | None] = []
    for answer in answers:
        if answer is None:
            member_of.append(None)
            continue
        for c, (rep, count) in enumerate(classes):
            if answers_equal(answer, rep):
                classes[c] = (rep, count + 1)
                member_of.append(c)
                break
        else:
            classes.append((answer, 1))
            member_of.append(len(classes) - 1)
    if not classes:
        return [0.0] * len(completions)
    top = max(count for _, count in classes)
    return [0.0 if c is None or classes[c][1] != top else 1.0 for c in member_of]
