"""Stage ``prefs``: preference pairs from scored rollouts.

Per question of ``rl_rollouts.jsonl`` (``trainer.records.RolloutRecord``): better = the trajectory with
the highest reward, worse = the one with the lowest (the first such on ties within the group). A
question is skipped when it has fewer than 2 trajectories, when best and worst rewards are equal (tie),
or when their margin is below ``min_margin``. Writes ``preferences.jsonl``
(``trainer.records.PreferenceRecord``: ``id``, ``question``, ``better``, ``worse``, ``better_reward``,
``worse_reward``, ``margin``, ``reward_mode``, ``label_free``) atomically, ``<stem>.run.json`` beside
it (``trainer.records.RunInfo``), and returns a summary of what was written/skipped.

Which reward ranks the trajectories (``reward``, recipe key and flag): unset, the reward the rollouts
were scored with; ``regime_w``, the service's rewards stored in the rollouts (which must have been
scored by it; ``label_free: true`` requires label-free scoring); ``correctness`` / ``majority``,
recomputed here from the trajectories' texts (``trainer.reward_modes``, no service), whatever reward
scored the rollouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.jsonl import read_records, write_json_atomic, write_jsonl_atomic
from trainer.records import PreferenceRecord, RolloutRecord, RunInfo, reward_label_free
from trainer.reward_modes import REWARD_MODES, RewardMode, check_reward_mode

__all__ = ["PrefsArguments", "ARG_CLASSES", "select_pair", "make_pair", "read_rollouts", "rewards_for", "plan", "run"]

SKIP_TOO_FEW = "too_few_trajectories"
SKIP_TIE = "tie"
SKIP_SMALL_MARGIN = "small_margin"


@dataclass
class PrefsArguments:
    rollouts_file: str = field(
        default="data/rl_rollouts.jsonl", metadata={"help": "Scored rollouts written by the rollouts stage."}
    )
    preferences_file: str = field(
        default="data/preferences.jsonl", metadata={"help": "Where the preference pairs go (overwritten)."}
    )
    min_margin: float = field(
        default=0.1, metadata={"help": "Skip a question when best reward - worst reward is below this."}
    )
    reward: str | None = field(
        default=None,
        metadata={
            "help": f"Which reward ranks the trajectories ({' | '.join(REWARD_MODES)}); unset: the one "
            "the rollouts were scored with. correctness / majority are recomputed here."
        },
    )
    label_free: bool = field(
        default=False, metadata={"help": "With reward 'regime_w': require rollouts scored without the gold."}
    )

    def __post_init__(self) -> None:
        if self.min_margin < 0:
            raise ValueError(f"min_margin must be >= 0, got {self.min_margin}")
        if self.reward is not None:
            check_reward_mode(self.reward)
        if self.label_free and self.reward not in (None, "regime_w"):
            raise ValueError(f"label_free applies to reward 'regime_w' only, not {self.reward!r}")


ARG_CLASSES: tuple[type, ...] = (PrefsArguments,)


def rewards_for(record: RolloutRecord, mode: RewardMode) -> list[float]:
    """The rewards ranking ``record``'s trajectories under ``mode``: the stored ones when the rollouts
    were scored with it, else recomputed (``correctness`` / ``majority``; ``regime_w`` needs the service)."""
    from trainer.reward_modes import correctness_rewards, majority_rewards

    if mode == record.reward_mode:
        return [t.reward for t in record.trajectories]
    texts = [t.output for t in record.trajectories]
    if mode == "correctness":
        return correctness_rewards(texts, record.gold_answer)
    if mode == "majority":
        return majority_rewards(texts)
    raise ValueError(
        f"question {record.id!r} was scored with {record.reward_mode!r}, not 'regime_w': "
        "Regime W rewards come from the service (rerun rollouts with reward: regime_w)"
    )


def select_pair(record: RolloutRecord, min_margin: float) -> PreferenceRecord | str:
    """The (better, worse) pair of one rollout record by its stored rewards, or the reason it is skipped."""
    return make_pair(record, min_margin, None, mode=record.reward_mode, label_free=record.label_free)


def make_pair(
    record: RolloutRecord, min_margin: float, rewards: Sequence[float] | None, *, mode: RewardMode, label_free: bool
) -> PreferenceRecord | str:
    """The pair of ``record`` ranked by ``rewards`` (default: the stored ones) of reward ``mode``."""
    trajectories = record.trajectories
    values = [float(r) for r in (rewards if rewards is not None else [t.reward for t in trajectories])]
    if len(values) != len(trajectories):
        raise ValueError(f"{len(values)} rewards for {len(trajectories)} trajectories of {record.id!r}")
    if len(values) < 2:
        return SKIP_TOO_FEW
    best = max(range(len(values)), key=lambda i: (values[i], -i))
    worst = min(range(len(values)), key=lambda i: (values[i], i))
    if values[best] == values[worst]:
        return SKIP_TIE
    if values[best] - values[worst] < min_margin:
        return SKIP_SMALL_MARGIN
    return PreferenceRecord(
        id=record.id,
        question=record.question,
        better=trajectories[best].output,
        worse=trajectories[worst].output,
        better_reward=values[best],
        worse_reward=values[worst],
        margin=values[best] - values[worst],
        reward_mode=mode,
        label_free=label_free,
    )


def read_rollouts(path: str | Path) -> list[RolloutRecord]:
    """The complete lines of a rollouts file, validated (a torn last line, from a killed run, is ignored)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"rollouts file {path} does not exist: run the rollouts stage first")
    return list(read_records(path, RolloutRecord, tail="skip"))


def _mode_of(records: Sequence[RolloutRecord], args: PrefsArguments) -> tuple[RewardMode, bool]:
    """(reward mode, label-free) of the pairs; an error when the rollouts cannot give them."""
    made = {(r.reward_mode, r.label_free) for r in records}
    if len(made) > 1:
        raise ValueError(
            f"{args.rollouts_file} mixes rollouts scored with different rewards {sorted(made)}; "
            "write one file per reward"
        )
    if args.reward is None:
        return made.pop() if made else ("regime_w", False)
    mode = check_reward_mode(args.reward)
    if mode == "regime_w":
        if made and next(iter(made))[0] != "regime_w":
            raise ValueError(
                f"reward 'regime_w' needs rollouts scored by the service; {args.rollouts_file} was "
                f"scored with {next(iter(made))[0]!r}"
            )
        label_free = bool(made and next(iter(made))[1])
        if args.label_free and not label_free:
            raise ValueError(
                f"label_free: {args.rollouts_file} was scored WITH the gold; rerun rollouts with label_free: true"
            )
        return mode, label_free
    return mode, reward_label_free(mode, False)


def plan(args: PrefsArguments) -> dict[str, Any]:
    return {
        "stage": "prefs",
        "rollouts_file": args.rollouts_file,
        "preferences_file": args.preferences_file,
        "min_margin": args.min_margin,
        "reward": args.reward or "the reward the rollouts were scored with",
        "label_free": args.label_free,
        "rule": "better = highest reward, worse = lowest; skip ties, margins < min_margin, < 2 trajectories",
        "writes": [args.preferences_file, RunInfo.path_for(args.preferences_file)],
    }


def run(args: PrefsArguments) -> dict[str, Any]:
    records = read_rollouts(args.rollouts_file)
    mode, label_free = _mode_of(records, args)
    counts = {"questions": 0, "pairs_written": 0, SKIP_TIE: 0, SKIP_SMALL_MARGIN: 0, SKIP_TOO_FEW: 0}
    pairs: list[PreferenceRecord] = []
    for record in records:
        counts["questions"] += 1
        try:
            rewards = rewards_for(record, mode)
        except ValueError as exc:
            raise ValueError(f"{args.rollouts_file}: question {record.id!r}: {exc}") from exc
        result = make_pair(record, args.min_margin, rewards, mode=mode, label_free=label_free)
        if isinstance(result, str):
            counts[result] += 1
            continue
        pairs.append(result)
    out = write_jsonl_atomic(args.preferences_file, pairs)
    margins = [p.margin for p in pairs if p.margin is not None]
    summary: dict[str, Any] = {
        "stage": "prefs",
        "preferences_file": str(out),
        "reward": mode,
        "label_free": label_free,
        "questions": counts["questions"],
        "pairs_written": len(pairs),
        "skipped": {
            "tie": counts[SKIP_TIE],
            "small_margin": counts[SKIP_SMALL_MARGIN],
            "too_few_trajectories": counts[SKIP_TOO_FEW],
        },
        "mean_margin": sum(margins) / len(margins) if margins else None,
    }
    scorer = next((r.scorer for r in records if r.scorer), None) if mode == "regime_w" else None
    info = RunInfo(
        stage="prefs",
        reward_mode=mode,
        label_free=label_free,
        scorer=scorer,
        inputs={"rollouts_file": args.rollouts_file},
        outputs={"preferences_file": str(out)},
        summary=summary,
    )
    summary["run_info"] = str(write_json_atomic(RunInfo.path_for(args.preferences_file), info))
    print(
        f"prefs: {summary['questions']} questions -> {summary['pairs_written']} pairs "
        f"(reward {mode}{', label-free' if label_free else ''}; skipped: {counts[SKIP_TIE]} tie, "
        f"{counts[SKIP_SMALL_MARGIN]} small margin, {counts[SKIP_TOO_FEW]} < 2 trajectories) -> {out}"
    )
    return summary
