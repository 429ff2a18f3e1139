"""Issue 25 item 1: the hard world's ablation with arms from the toy base and from the teacher, side by side.

    python bench/arm_model_table.py bench/results/ablation_hard_toy_base_arms.json \\
        bench/results/ablation_hard_teacher_arms.json

Reads two ``ablation.json`` files (``experiments.ablation``'s ``collect``: ``{"cells": {"seedN/row": result}}``), the
first with the toy base's arms, the second with the teacher's, and prints the markdown table of
docs/reward-ablation-hard.md (greedy dev accuracy, 800 problems: mean and per seed, difference to SFT) and each Regime W
row's difference to its control per seed (with gold: ``correctness``; label-free: ``majority`` and SFT). A cell that
did not finish is shown as missing; the rows that need no arms (``correctness``, ``majority``) come from the first file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROWS = (
    ("correctness", "`correctness`"),
    ("majority", "`majority`"),
    ("regime_w", "`regime_w`"),
    ("regime_w_gold_path", "`regime_w_gold_path`"),
    ("regime_w_label_free", "`regime_w --label_free true`"),
    ("regime_w_progress", "`regime_w_progress`"),
    ("regime_w_progress_label_free", "`regime_w_progress --label_free true`"),
    ("distill_correctness", "SFT on the teacher's solutions, then `correctness`"),
)
NO_ARMS = ("correctness", "majority")
TEACHER_ONLY = ("distill_correctness",)  # rows whose cells only the teacher's file has (they need a teacher)
#: each Regime W row (and the distill control) against the control the bar names
CONTROLS = (
    ("regime_w", "correctness"),
    ("regime_w_gold_path", "correctness"),
    ("regime_w_progress", "correctness"),
    ("distill_correctness", "correctness"),
    ("regime_w_label_free", "majority"),
    ("regime_w_label_free", "SFT"),
    ("regime_w_progress_label_free", "majority"),
    ("regime_w_progress_label_free", "SFT"),
)
STAGES = ("rl-dpo", "rl-grpo")


def correct(cells: dict[str, Any], seed: int, row: str, stage: str) -> int | None:
    cell = cells.get(f"seed{seed}/{row}")
    got = None if cell is None else cell["table"]["gsm8k_dev"].get(stage)  # no rl-dpo: prefs wrote no pairs
    return None if got is None else int(got["correct"])


def reference(cells: dict[str, Any], seed: int, model: str) -> int:
    cell = next(c for k, c in cells.items() if k.startswith(f"seed{seed}/"))
    return int(cell["base_sft"]["gsm8k_dev"][model]["correct"])


def distilled_sft(cells: dict[str, Any], seed: int) -> int | None:
    """The distill row's starting point: SFT on the teacher's right solutions (``sft-distill``), right answers."""
    cell = cells.get(f"seed{seed}/distill_correctness")
    got = None if cell is None else cell["table"]["gsm8k_dev"].get("sft-distill")
    return None if got is None else int(got["correct"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("toy_base_arms", type=Path)
    parser.add_argument("teacher_arms", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=800, help="dev problems")
    args = parser.parse_args(argv)
    arms = {"toy base": json.loads(args.toy_base_arms.read_text())["cells"]}
    arms["teacher"] = json.loads(args.teacher_arms.read_text())["cells"]
    seeds, pct = args.seeds, (lambda c: 100.0 * c / args.n)
    first = arms["toy base"]
    sft = [pct(reference(first, s, "sft")) for s in seeds]
    base = [pct(reference(first, s, "base")) for s in seeds]
    print("| reward | arms | DPO mean | DPO per seed | GRPO mean | GRPO per seed | DPO − SFT | GRPO − SFT |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    refs = [("(base, before SFT)", base), ("(SFT, before RL)", sft)]
    distilled = [distilled_sft(arms["teacher"], s) for s in seeds]
    if None not in distilled:
        refs.append(("(SFT on the teacher's solutions, before RL)", [pct(c) for c in distilled if c is not None]))
    for name, values in refs:
        print(f"| {name} | | {statistics.mean(values):.1f} | " + " / ".join(f"{v:.1f}" for v in values) + " | | | | |")
    for row, label in ROWS:
        for arm_name, cells in arms.items():
            if (row in NO_ARMS and arm_name != "toy base") or (row in TEACHER_ONLY and arm_name != "teacher"):
                continue
            if not any(k.endswith(f"/{row}") for k in cells):
                continue  # not run with these arms
            per_stage = []
            for stage in STAGES:
                got = [correct(cells, s, row, stage) for s in seeds]
                per_stage.append([pct(c) if c is not None else None for c in got])
            shown = "—" if row in NO_ARMS or row in TEACHER_ONLY else arm_name
            cols = []
            for values in per_stage:
                done = [v for v in values if v is not None]
                mean = f"{statistics.mean(done):.1f}" if len(done) == len(seeds) else "incomplete"
                cols += [mean, " / ".join("–" if v is None else f"{v:.1f}" for v in values)]
            diffs = [
                f"{statistics.mean([x for x in v if x is not None]) - statistics.mean(sft):+.1f}"
                if None not in v
                else ""
                for v in per_stage
            ]
            print(f"| {label} | {shown} | " + " | ".join(cols) + " | " + " | ".join(diffs) + " |")
    print()
    for stage in STAGES:
        for arm_name, cells in arms.items():
            for row, control in CONTROLS:
                if (row in TEACHER_ONLY and arm_name != "teacher") or not any(k.endswith(f"/{row}") for k in cells):
                    continue
                ours = [correct(cells, s, row, stage) for s in seeds]
                theirs = [
                    reference(first, s, "sft") if control == "SFT" else correct(first, s, control, stage) for s in seeds
                ]
                if None in ours or None in theirs:
                    print(f"{stage} {row} ({arm_name} arms) - {control}: incomplete")
                    continue
                diff = [pct(a - b) for a, b in zip(ours, theirs)]  # type: ignore[operator]
                ahead = all(d > 0 for d in diff)
                print(
                    f"{stage} {row} ({arm_name} arms) - {control}: "
                    + " / ".join(f"{d:+.1f}" for d in diff)
                    + f", mean {statistics.mean(diff):+.2f}{', ahead on every seed' if ahead else ''}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
