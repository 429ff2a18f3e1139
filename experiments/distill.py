"""Rejection-sampled distillation: the control "SFT on the teacher's own correct solutions" (issue 25 item 1).

A user who has a model stronger than the policy asks first whether to distill it instead of serving arms
from it. This module builds that control from the real stages, as RFT does (Yuan et al. 2023, "Scaling
relationship on learning mathematical reasoning with large language models"):

1. ``rollouts`` of the teacher (the bare model, ``--adapter_path none``) on the train split's questions,
   ``samples`` each at the recipe's temperature, scored by ``correctness`` (no service);
2. ``pick_correct``: per question, the distinct completions whose final answer is the gold, in sample order
   (a question the teacher never got right is left out);
3. ``write_distilled_data``: a GSM8K-format JSONL of those (question, completion) pairs beside the dev rows,
   unchanged, and its split file (the same dev problems held out), so the SFT stage reads it as it reads
   the world's own data;
4. ``sft`` from the toy base on it: the distilled SFT adapter, from which the ablation cell runs its RL
   stages with the row's reward (``correctness``) exactly as the other rows run from the plain SFT adapter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shared_schemas.answer import answers_equal
from trainer.jsonl import read_records
from trainer.records import RolloutRecord

__all__ = ["DistillPaths", "pick_correct", "write_distilled_data", "distill_sft"]


class _StageRunner(Protocol):
    def run(self, stage: str, flags: Sequence[str], log: Path, env: dict[str, str] | None = None) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DistillPaths:
    """Where one seed's distillation lives (``<seed dir>/distill``)."""

    root: Path

    @property
    def rollouts(self) -> Path:
        return self.root / "teacher_rollouts.jsonl"

    @property
    def data(self) -> Path:
        return self.root / "train.jsonl"

    @property
    def split(self) -> Path:
        return self.root / "split.json"

    @property
    def adapter(self) -> Path:
        return self.root / "sft"

    @property
    def stats(self) -> Path:
        return self.root / "distill.json"


def pick_correct(records: Sequence[RolloutRecord], per_question: int | None = None) -> dict[str, list[str]]:
    """Question id -> its distinct completions whose final answer equals the gold (``answers_equal``), in
    sample order, at most ``per_question`` (None: all). Questions with none (or no gold) are left out."""
    picked: dict[str, list[str]] = {}
    for record in records:
        if record.gold_answer is None:
            continue
        kept: list[str] = []
        for t in record.trajectories:
            text = t.output.strip()
            if t.final_answer is None or not answers_equal(t.final_answer, record.gold_answer) or text in kept:
                continue
            kept.append(text)
            if per_question is not None and len(kept) >= per_question:
                break
        if kept:
            picked[record.id] = kept
    return picked


def _index(problem_id: str) -> int:
    tail = problem_id.rsplit("-", 1)[-1]
    if not tail.isdigit():
        raise ValueError(f"problem id {problem_id!r} does not end in its row index (ids are '<prefix>-<split>-<i>')")
    return int(tail)


def write_distilled_data(
    data_file: Path, split_file: Path, picks: dict[str, list[str]], out: DistillPaths
) -> dict[str, int]:
    """Write ``out.data`` (one GSM8K row per picked completion, the completion as its ``answer``, in the
    train split's order; then the dev rows unchanged) and ``out.split`` (the new train ids; the dev rows as
    dev, with the original split's seed and dev fraction). Returns the counts."""
    rows = [json.loads(line) for line in data_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    split = json.loads(split_file.read_text(encoding="utf-8"))
    dev = [rows[_index(i)] for i in split["dev_ids"]]
    unknown = sorted(set(picks) - set(split["train_ids"]))
    if unknown:
        raise ValueError(f"picked questions outside the train split (e.g. {unknown[:3]}): the dev set must stay unseen")
    train: list[dict[str, str]] = []
    for pid in split["train_ids"]:
        for completion in picks.get(pid, []):
            train.append({"question": rows[_index(pid)]["question"], "answer": completion})
    if not train:
        raise ValueError("the teacher got no train question right: nothing to distill")
    out.root.mkdir(parents=True, exist_ok=True)
    with open(out.data, "w", encoding="utf-8") as fh:
        for row in [*train, *dev]:
            fh.write(json.dumps(row) + "\n")
    ids = [f"gsm8k-train-{i}" for i in range(len(train) + len(dev))]
    payload = {
        "version": split.get("version", 1),
        "dataset": str(out.data),
        "split_seed": split.get("split_seed"),
        "dev_fraction": split.get("dev_fraction"),
        "num_train": len(train),
        "num_dev": len(dev),
        "train_ids": ids[: len(train)],
        "dev_ids": ids[len(train) :],
    }
    out.split.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return {
        "train_questions": len(split["train_ids"]),
        "questions_kept": sum(1 for pid in split["train_ids"] if picks.get(pid)),
        "rows": len(train),
        "dev_rows": len(dev),
    }


def distill_sft(
    stages: _StageRunner,
    paths: DistillPaths,
    *,
    teacher: Path,
    base: Path,
    data: Path,
    test: Path,
    split: Path,
    seed: int,
    samples: int,
) -> dict[str, Any]:
    """Steps 1-4 above for one seed; each step is skipped when its output exists (a rerun resumes).
    Returns the distillation's counts (also in ``paths.stats``)."""
    if (paths.adapter / "adapter_config.json").is_file() and paths.stats.is_file():
        stats: dict[str, Any] = json.loads(paths.stats.read_text(encoding="utf-8"))
        return stats
    logs = paths.root / "logs"
    data_flags = ["--dataset", str(data), "--test_dataset", str(test), "--split_file", str(split)]
    if not paths.rollouts.is_file():
        partial = paths.rollouts.with_suffix(".partial.jsonl")
        stages.run(
            "rollouts",
            [
                "--model_name_or_path",
                str(teacher),
                "--adapter_path",
                "none",
                *data_flags,
                "--max_train_samples",
                "1000000",
                "--num_samples",
                str(samples),
                "--reward",
                "correctness",
                "--seed",
                str(seed),
                "--rollouts_file",
                str(partial),
            ],
            logs / "teacher-rollouts.log",
        )
        partial.replace(paths.rollouts)
        run_info = partial.with_name(partial.name.removesuffix(".jsonl") + ".run.json")  # the stage's run record
        if run_info.is_file():
            run_info.replace(paths.root / "teacher_rollouts.run.json")
    records = list(read_records(paths.rollouts, RolloutRecord))
    counts = write_distilled_data(data, split, pick_correct(records), paths)
    sft = stages.run(
        "sft",
        [
            "--model_name_or_path",
            str(base),
            "--dataset",
            str(paths.data),
            "--test_dataset",
            str(test),
            "--split_file",
            str(paths.split),
            "--output_dir",
            str(paths.adapter),
            "--seed",
            str(seed),
        ],
        logs / "sft.log",
    )
    samples_right = sum(
        1
        for r in records
        for t in r.trajectories
        if r.gold_answer is not None and t.final_answer is not None and answers_equal(t.final_answer, r.gold_answer)
    )
    stats = {
        "teacher": str(teacher),
        "samples_per_question": samples,
        "teacher_samples_right": round(samples_right / max(1, samples * len(records)), 4),
        **counts,
        "sft_seconds": sft.get("_seconds"),
    }
    paths.stats.write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats
