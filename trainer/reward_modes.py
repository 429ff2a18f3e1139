"""The reward modes: which reward scores a policy's samples (DESIGN §5, "Reward controls"), the
label-free rule, and the one dispatch from a mode to the scorer that computes it.

- ``regime_w``    — the Regime W service over HTTP (``label_free`` leaves the gold out even when the
  data set has it);
- ``correctness`` — 1 when the sample's answer equals the gold, else 0: the answer contract of
  ``shared_schemas.answer``, no service;
- ``majority``    — label-free vote among the policy's own samples of the same question (test-time
  RL's reward): 1 when the sample's answer is the group's most frequent answer, else 0.

``make_scorer(mode, label_free=..., service=...)`` is the one place a mode becomes a ``Scorer``: the
``rollouts`` stage scores its chunks with it, the TRL reward functions of the ``grpo`` stage wrap it
(``trainer.rewards.build_reward_functions``) and the framework integrations (``trainer.integrations``)
score their samples with it. A scorer takes ``ScoreGroup``s (one question's samples and its gold) and
gives back one ``shared_schemas.wire.TrajectoryScore`` a sample: the service's, or, for a control,
its ``reward`` (and ``correctness``) with the answer parsed by ``shared_schemas.answer.parse_answer``.

``reward_label_free(mode, label_free)`` is the one statement of which runs use no gold.

The two controls are pure functions over one question's group of samples (``correctness_rewards``,
``majority_rewards``), so every stage and integration computes them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from shared_schemas.answer import answers_equal, extract_answer, gold_answer, parse_answer
from shared_schemas.wire import TrajectoryScore
from trainer.errors import RewardInputError

__all__ = [
    "RewardMode",
    "REWARD_MODES",
    "check_reward_mode",
    "check_reward",
    "reward_label_free",
    "correctness_rewards",
    "majority_rewards",
    "ScoreGroup",
    "GroupScores",
    "Scorer",
    "CorrectnessScorer",
    "MajorityScorer",
    "make_scorer",
    "scorer_from_args",
]

RewardMode = Literal["regime_w", "correctness", "majority"]
REWARD_MODES: tuple[str, ...] = get_args(RewardMode)


def check_reward_mode(mode: str) -> RewardMode:
    """``mode`` if it names a reward control, else a ``ValueError`` listing the choices."""
    if mode not in REWARD_MODES:
        raise ValueError(f"reward must be one of {', '.join(REWARD_MODES)}; got {mode!r}")
    return mode  # type: ignore[return-value]


def check_reward(mode: str, label_free: bool) -> RewardMode:
    """``check_reward_mode``, and ``label_free`` only with ``regime_w`` (the controls fix it themselves)."""
    checked = check_reward_mode(mode)
    if label_free and checked != "regime_w":
        raise ValueError(f"label_free applies to reward 'regime_w' only, not {mode!r}")
    return checked


def reward_label_free(mode: str, label_free: bool) -> bool:
    """Whether a reward uses no gold answer: ``majority`` never does, ``correctness`` always does,
    ``regime_w`` when run with ``label_free``."""
    if mode == "majority":
        return True
    if mode == "correctness":
        return False
    return bool(label_free)


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


# ------------------------------------------------------------------------------------------ scorers


@dataclass(frozen=True)
class ScoreGroup:
    """One question's samples to score: an id, the question, its gold (None: none known) and the texts
    (with their token counts when known)."""

    id: str
    question: str
    gold: str | None
    texts: Sequence[str]
    num_tokens: Sequence[int] | None = None


@dataclass(frozen=True)
class GroupScores:
    """The scores of one ``ScoreGroup``, one per text in its order, and the group's consensus answer
    (the service's; None from a control)."""

    scores: list[TrajectoryScore]
    consensus_answer: str | None = None


class Scorer:
    """Scores ``ScoreGroup``s under one reward mode; built by ``make_scorer``.

    ``score`` runs in the caller's thread; ``ascore`` is its coroutine form for an event loop (the
    controls compute in place; the service scorer awaits an ``AsyncRewardClient``). A scorer that
    holds connections releases them in ``close`` / ``aclose`` (also as a context manager).
    """

    mode: ClassVar[RewardMode]
    #: Where the TRL reward function logs the mean reward of a call (None: it logs its own components).
    log_name: ClassVar[str | None] = None
    #: Whether every sample needs its question text (the service looks up the question's arms).
    needs_question: ClassVar[bool] = False
    #: Whether the reward uses no gold (``reward_label_free``): the groups' golds are then never read.
    label_free: bool = False
    #: Which scorer made the last scores (the service's ``ScorerInfo`` as a dict); None for a control.
    info: dict[str, Any] | None = None

    def connect(self) -> Scorer:
        """Resolve now what the first request needs (the service scorer builds its client: a bad URL
        or an unreadable key file fails here, before any work); returns the scorer."""
        return self

    def score(self, groups: Sequence[ScoreGroup]) -> list[GroupScores]:
        raise NotImplementedError

    async def ascore(self, groups: Sequence[ScoreGroup]) -> list[GroupScores]:
        return self.score(groups)

    def close(self) -> None:
        """Release what the scorer holds (nothing, for a control)."""

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _control_score(text: str, reward: float, correctness: float | None = None) -> TrajectoryScore:
    parsed = parse_answer(text)
    return TrajectoryScore(
        reward=reward, correctness=correctness, final_answer=parsed.value, format_ok=parsed.format_ok
    )


class CorrectnessScorer(Scorer):
    """``correctness``: 1.0 when a sample's answer equals its group's gold, else 0.0 (no service). A
    group without a readable gold is a ``RewardInputError`` naming it: correctness needs labels."""

    mode = "correctness"
    log_name = "control/correctness"

    def score(self, groups: Sequence[ScoreGroup]) -> list[GroupScores]:
        out = []
        for group in groups:
            try:
                rewards = correctness_rewards(group.texts, group.gold)
            except ValueError as exc:
                raise RewardInputError(f"question {group.id!r}: {exc}") from exc
            out.append(GroupScores([_control_score(t, r, correctness=r) for t, r in zip(group.texts, rewards)]))
        return out


class MajorityScorer(Scorer):
    """``majority``: the label-free vote among one group's samples (no service, no gold)."""

    mode = "majority"
    log_name = "control/majority_share"
    label_free = True

    def score(self, groups: Sequence[ScoreGroup]) -> list[GroupScores]:
        return [
            GroupScores([_control_score(t, r) for t, r in zip(group.texts, majority_rewards(group.texts))])
            for group in groups
        ]


def make_scorer(mode: str, *, label_free: bool = False, service: Any = None, **client_fields: Any) -> Scorer:
    """THE dispatch from a reward mode to its scorer.

    ``correctness`` and ``majority`` are computed here, with no service (``service`` and
    ``client_fields`` are not used). ``regime_w`` is ``trainer.rewards.ServiceScorer``: the service
    over HTTP, with the gold left out when ``label_free``; ``service`` says how to reach it — a
    ``trainer.reward_client.ClientSettings``, a recipe's ``trainer.configs.RewardServiceArguments``,
    a ``RewardClient`` / ``AsyncRewardClient`` to use (not to close), or None: the client's keywords
    (``base_url``, ``api_key``, ``timeout_s``, ``batch_items``, ...) resolved from the environment
    (``REGIME_W_URL``, ``REGIME_W_API_KEY``) when the first request goes out.
    """
    checked = check_reward(mode, label_free)
    if checked == "correctness":
        return CorrectnessScorer()
    if checked == "majority":
        return MajorityScorer()
    from trainer.rewards import ServiceScorer  # the HTTP client, loaded only where the service is used

    return ServiceScorer(service, label_free=label_free, **client_fields)


def scorer_from_args(args: Any) -> Scorer:
    """``make_scorer`` for a recipe's ``RewardServiceArguments``: its ``reward``, ``label_free``, and the
    service it names (URL, key variable, timeouts, ``reward_batch_items``; the key is read when the
    first request goes out)."""
    return make_scorer(args.reward, label_free=bool(args.label_free), service=args)
