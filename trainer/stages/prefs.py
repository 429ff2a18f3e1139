"""Stage ``prefs``: preference pairs from scored rollouts.

Per question of ``rl_rollouts.jsonl``: better = the trajectory with the highest reward, worse = the
one with the lowest (the first such on ties within the group). A question is skipped when it has
fewer than 2 trajectories, when best and worst rewards are equal (tie), or when their margin is
below ``min_margin``. Writes ``preferences.jsonl`` (``id``, ``question``, ``better``, ``worse``,
``better_reward``, ``worse_reward``, ``margin``) and returns a summary of what was written/skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PrefsArguments", "ARG_CLASSES", "PreferencePair", "select_pair", "plan", "run"]

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

    def __post_init__(self) -> None:
        if self.min_margin < 0:
            raise ValueError(f"min_margin must be >= 0, got {self.min_margin}")


ARG_CLASSES: tuple[type, ...] = (PrefsArguments,)


@dataclass(frozen=True, slots=True)
class PreferencePair:
    id: str
    question: str
    better: str
    worse: str
    better_reward: float
    worse_reward: float

    @property
    def margin(self) -> float:
        return self.better_reward - self.worse_reward

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "better": self.better,
            "worse": self.worse,
            "better_reward": self.better_reward,
            "worse_reward": self.worse_reward,
            "margin": self.margin,
        }


def select_pair(record: dict[str, Any], min_margin: float) -> PreferencePair | str:
    """The (better, worse) pair of one rollout record, or the reason it is skipped."""
    trajectories: Sequence[dict[str, Any]] = record.get("trajectories") or []
    if len(trajectories) < 2:
        return SKIP_TOO_FEW
    rewards = [float(t["reward"]) for t in trajectories]
    best = max(range(len(rewards)), key=lambda i: (rewards[i], -i))
    worst = min(range(len(rewards)), key=lambda i: (rewards[i], i))
    if rewards[best] == rewards[worst]:
        return SKIP_TIE
    if rewards[best] - rewards[worst] < min_margin:
        return SKIP_SMALL_MARGIN
    return PreferencePair(
        id=str(record["id"]),
        question=str(record["question"]),
        better=str(trajectories[best]["output"]),
        worse=str(trajectories[worst]["output"]),
        better_reward=rewards[best],
        worse_reward=rewards[worst],
    )


def read_rollouts(path: str | Path) -> Iterable[dict[str, Any]]:
    """The complete lines of a rollouts file (a torn last line, from a killed run, is ignored)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"rollouts file {path} does not exist: run the rollouts stage first")
    with path.open("rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    complete = lines[:-1]  # text after the last newline is an unfinished line (or empty)
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        try:
            yield json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc


def plan(args: PrefsArguments) -> dict[str, Any]:
    return {
        "stage": "prefs",
        "rollouts_file": args.rollouts_file,
        "preferences_file": args.preferences_file,
        "min_margin": args.min_margin,
        "rule": "better = highest reward, worse = lowest; skip ties, margins < min_margin, < 2 trajectories",
    }


def run(args: PrefsArguments) -> dict[str, Any]:
    counts = {"questions": 0, "pairs_written": 0, SKIP_TIE: 0, SKIP_SMALL_MARGIN: 0, SKIP_TOO_FEW: 0}
    margins: list[float] = []
    out = Path(args.preferences_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in read_rollouts(args.rollouts_file):
            counts["questions"] += 1
            result = select_pair(record, args.min_margin)
            if isinstance(result, str):
                counts[result] += 1
                continue
            f.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
            counts["pairs_written"] += 1
            margins.append(result.margin)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    summary = {
        "stage": "prefs",
        "preferences_file": str(out),
        "questions": counts["questions"],
        "pairs_written": counts["pairs_written"],
        "skipped": {
            "tie": counts[SKIP_TIE],
            "small_margin": counts[SKIP_SMALL_MARGIN],
            "too_few_trajectories": counts[SKIP_TOO_FEW],
        },
        "mean_margin": sum(margins) / len(margins) if margins else None,
    }
    print(
        f"prefs: {summary['questions']} questions -> {summary['pairs_written']} pairs "
        f"(skipped: {counts[SKIP_TIE]} tie, {counts[SKIP_SMALL_MARGIN]} small margin, "
        f"{counts[SKIP_TOO_FEW]} < 2 trajectories) -> {out}"
    )
    return summary
