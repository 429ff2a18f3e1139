"""Several seeds of ``experiments.long_grpo`` in one table and one plot: mean and spread per saved step.

    python -m experiments.long_grpo_seeds bench/results/long_grpo_seed0.json bench/results/long_grpo_seed1.json \\
        bench/results/long_grpo_seed2.json --plot docs/label-free-long-grpo.png

Prints a markdown table (per row and saved step: dev accuracy mean [min, max], unanimous-wrong share, distinct
answers) and, per row, the first saved step at which its mean accuracy sits ``--collapse-points`` or more under
the SFT adapter's (step 0); writes the plot (mean line, min-max band) when ``--plot`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["StepStats", "combine", "first_collapse", "format_table", "main"]

METRICS = ("dev_accuracy", "unanimous_wrong", "distinct_answers_mean")


@dataclass(frozen=True)
class StepStats:
    """One row's metric at one saved step over the seeds that reached it."""

    step: int
    mean: float
    low: float
    high: float
    n: int


def combine(results: Sequence[dict[str, Any]], metric: str) -> dict[str, list[StepStats]]:
    """``{row: [StepStats per saved step]}`` of ``metric`` over ``results`` (``long_grpo.json`` documents).
    A step is listed when every result that has the row measured it; results of different step grids are an
    error (their means would mix different schedules)."""
    grids = {(r["steps"], r["every"]) for r in results}
    if len(grids) != 1:
        raise ValueError(f"the results ran different schedules (steps, every): {sorted(grids)}")
    rows: dict[str, list[StepStats]] = {}
    names = sorted({name for r in results for name in r["rows"]})
    for name in names:
        curves = [r["rows"][name]["curve"] for r in results if name in r["rows"]]
        steps = sorted(set.intersection(*({p["step"] for p in c} for c in curves)))
        stats = []
        for step in steps:
            values = [next(p[metric] for p in c if p["step"] == step) for c in curves]
            stats.append(StepStats(step, sum(values) / len(values), min(values), max(values), len(values)))
        rows[name] = stats
    return rows


def first_collapse(stats: Sequence[StepStats], points: float) -> int | None:
    """The first saved step whose mean is ``points`` (accuracy points, 0-100) or more under step 0's, or None."""
    start = next((s.mean for s in stats if s.step == 0), None)
    if start is None:
        return None
    return next((s.step for s in stats if 100 * (start - s.mean) >= points), None)


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown: one line per (row, metric), one column per saved step; ``mean [min, max]`` over the seeds."""
    by_metric = {m: combine(results, m) for m in METRICS}
    steps = [s.step for s in next(iter(by_metric["dev_accuracy"].values()))]
    head = "| row: metric (mean [min, max] over seeds) | " + " | ".join(str(s) for s in steps) + " |"
    lines = [head, "| --- |" + " ---: |" * len(steps)]
    scale = {"dev_accuracy": 100.0, "unanimous_wrong": 100.0, "distinct_answers_mean": 1.0}
    label = {
        "dev_accuracy": "dev accuracy %",
        "unanimous_wrong": "unanimous wrong %",
        "distinct_answers_mean": "distinct",
    }
    for metric in METRICS:
        for name, stats in by_metric[metric].items():
            k = scale[metric]
            digits = 1 if k == 100.0 else 2
            cells = [f"{k * s.mean:.{digits}f} [{k * s.low:.{digits}f}, {k * s.high:.{digits}f}]" for s in stats]
            lines.append(f"| {name}: {label[metric]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Dev accuracy and unanimous-wrong share per saved step: the seeds' mean, their min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric, title in (
        (axes[0], "dev_accuracy", "greedy dev accuracy (%)"),
        (axes[1], "unanimous_wrong", "groups unanimous on a wrong answer (%)"),
    ):
        for name, stats in combine(results, metric).items():
            x = [s.step for s in stats]
            ax.plot(x, [100 * s.mean for s in stats], marker="o", label=f"{name} (n={stats[0].n})")
            ax.fill_between(x, [100 * s.low for s in stats], [100 * s.high for s in stats], alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("GRPO step")
        ax.legend(fontsize=8)
    fig.suptitle(f"label-free GRPO trained longer, {len(results)} seeds: mean, min-max band")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="long_grpo.json files, one per seed")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--collapse-points", type=float, default=5.0, help="accuracy points under SFT = collapsed")
    args = parser.parse_args(argv)
    results = [json.loads(p.read_text()) for p in args.results]
    print(f"seeds: {[r['seed'] for r in results]}")
    print(format_table(results))
    for name, stats in combine(results, "dev_accuracy").items():
        step = first_collapse(stats, args.collapse_points)
        end = stats[-1]
        print(
            f"{name}: mean accuracy {100 * stats[0].mean:.1f} -> {100 * end.mean:.1f} at step {end.step}; "
            + (f"{args.collapse_points:g}+ points under SFT from step {step}" if step is not None else "no collapse")
        )
    if args.plot is not None:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
