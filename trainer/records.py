"""The typed artifacts the stages hand each other (pydantic models), and which reward made them.

- ``RolloutRecord`` (one line of ``rl_rollouts.jsonl``, written by ``rollouts``, read by ``prefs``
  and the toy loop): one question, its N scored ``TrajectoryRecord``s, the scorer, the reward mode.
- ``PreferenceRecord`` (one line of ``preferences.jsonl``, written by ``prefs``, read by ``dpo``).
- ``EvalPrediction`` (one line of ``predictions.jsonl``, written by ``eval``, read by the toy loop).
- ``RunInfo`` (``<artifact>.run.json`` beside a rollouts or preferences file): the stage, the reward
  mode, the scorer, what it read and wrote, its summary.

``final_answer`` / ``format_ok`` of a trajectory have ONE source: ``shared_schemas.answer.parse_answer``
run by the trainer on the text it generated. The service computes the same two fields with the same
function, but the controls (``correctness``, ``majority``) score without a service, so only the
local parse exists in every reward mode; the service's copies are not stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainer import __version__
from trainer.reward_modes import RewardMode, reward_label_free

# ``reward_label_free`` (the label-free rule, defined in ``trainer.reward_modes``) is re-exported: a
# record's ``label_free`` is what it says for the record's reward mode.
__all__ = ["TrajectoryRecord", "RolloutRecord", "PreferenceRecord", "EvalPrediction", "RunInfo", "reward_label_free"]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrajectoryRecord(_Record):
    """One sampled completion and its scores. Components are None where the reward has none."""

    output: str
    reward: float
    correctness: float | None = None
    s_end: float | None = None
    s_path: float | None = None
    s_cf: float | None = None
    s_wm: float | None = None
    length_penalty: float | None = None
    final_answer: str | None = None
    format_ok: bool = False
    num_tokens: int | None = None
    seed: int | None = None
    temperature: float | None = None


class RolloutRecord(_Record):
    """One question of ``rl_rollouts.jsonl``: its N trajectories, scored by ``reward_mode``.

    Files written before the reward controls existed have no ``reward_mode`` / ``label_free``: they
    were scored by the Regime W service with the gold, which is what the defaults say.
    """

    id: str
    question: str
    gold_answer: str | None = None
    consensus_answer: str | None = None
    trajectories: list[TrajectoryRecord] = Field(min_length=1)
    scorer: dict[str, Any] | None = None
    reward_mode: RewardMode = "regime_w"
    label_free: bool = False


class PreferenceRecord(_Record):
    """One DPO pair: ``better`` got a higher reward than ``worse`` from ``reward_mode``.

    ``prefs`` fills every field; a pair file made elsewhere (by hand, from human labels) needs only
    ``question``, ``better`` and ``worse`` for DPO, and may leave the id and rewards out.
    """

    id: str | None = None
    question: str
    better: str
    worse: str
    better_reward: float | None = None
    worse_reward: float | None = None
    margin: float | None = None
    reward_mode: RewardMode | None = None  # None: not recorded (a pair file made elsewhere)
    label_free: bool | None = None

    @property
    def reward_name(self) -> str:
        """``regime_w``, ``regime_w (label-free)``, ``correctness``, ``majority`` or ``unrecorded``."""
        if self.reward_mode is None:
            return "unrecorded"
        return self.reward_mode + (" (label-free)" if self.reward_mode == "regime_w" and self.label_free else "")

    @model_validator(mode="after")
    def _check(self) -> PreferenceRecord:
        if self.better_reward is None or self.worse_reward is None:
            return self
        if self.better_reward < self.worse_reward:
            raise ValueError(f"better_reward {self.better_reward} is below worse_reward {self.worse_reward}")
        margin = self.better_reward - self.worse_reward
        if self.margin is None:
            object.__setattr__(self, "margin", margin)
        elif abs(self.margin - margin) > 1e-9:
            raise ValueError(f"margin {self.margin} is not better_reward - worse_reward ({margin})")
        return self


class EvalPrediction(_Record):
    """One model's greedy answer to one question, checked against the gold."""

    model: str
    dataset: str
    id: str
    gold: str | None
    prediction: str | None
    correct: bool
    format_ok: bool
    output: str


class RunInfo(_Record):
    """What one run of a stage made and how: written beside its artifact as ``<name>.run.json``."""

    stage: str
    reward_mode: RewardMode
    label_free: bool
    scorer: dict[str, Any] | None = None
    service_url: str | None = None
    inputs: dict[str, str] = Field(default_factory=dict)
    outputs: dict[str, str] = Field(default_factory=dict)
    summary: dict[str, Any] = Field(default_factory=dict)
    trainer_version: str = __version__
    finished_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @staticmethod
    def path_for(artifact: str) -> str:
        """``data/rl_rollouts.jsonl`` -> ``data/rl_rollouts.run.json``."""
        stem, dot, _ = artifact.rpartition(".")
        return f"{stem if dot else artifact}.run.json"
