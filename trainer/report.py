"""Evaluation report: accuracy per (model, dataset) as a markdown table and a PNG bar chart."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["AccuracyCell", "accuracy_cells", "markdown_table", "bar_chart"]


@dataclass(frozen=True, slots=True)
class AccuracyCell:
    """Accuracy of one model on one dataset."""

    model: str
    dataset: str
    n: int
    correct: int
    format_ok: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_json(self) -> dict[str, object]:
        return {**asdict(self), "accuracy": self.accuracy}


def accuracy_cells(records: Iterable[dict[str, object]]) -> list[AccuracyCell]:
    """Aggregate per-question records (``model``, ``dataset``, ``correct``, ``format_ok``).

    Cells come out in the order each (model, dataset) pair first appears.
    """
    totals: dict[tuple[str, str], list[int]] = {}
    for r in records:
        key = (str(r["model"]), str(r["dataset"]))
        t = totals.setdefault(key, [0, 0, 0])
        t[0] += 1
        t[1] += int(bool(r["correct"]))
        t[2] += int(bool(r["format_ok"]))
    return [AccuracyCell(m, d, n, c, f) for (m, d), (n, c, f) in totals.items()]


def _ordered(cells: Sequence[AccuracyCell]) -> tuple[list[str], list[str], dict[tuple[str, str], AccuracyCell]]:
    models: list[str] = []
    datasets: list[str] = []
    for c in cells:
        if c.model not in models:
            models.append(c.model)
        if c.dataset not in datasets:
            datasets.append(c.dataset)
    return models, datasets, {(c.model, c.dataset): c for c in cells}


def markdown_table(cells: Sequence[AccuracyCell]) -> str:
    """A model × dataset table; each cell is ``accuracy% (correct/n)``."""
    models, datasets, by_key = _ordered(cells)
    lines = [
        "| model | " + " | ".join(datasets) + " |",
        "| --- | " + " | ".join("---:" for _ in datasets) + " |",
    ]
    for m in models:
        row = []
        for d in datasets:
            c = by_key.get((m, d))
            row.append("–" if c is None else f"{100 * c.accuracy:.1f}% ({c.correct}/{c.n})")
        lines.append(f"| {m} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(cells: Sequence[AccuracyCell], path: str | Path, *, title: str = "Accuracy") -> Path:
    """Grouped bars (one group per dataset, one bar per model) written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, datasets, by_key = _ordered(cells)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(datasets) * max(1, len(models)) / 2 + 2), 3.6))
    try:
        for i, m in enumerate(models):
            xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(datasets))]
            ys = [100 * by_key[(m, d)].accuracy if (m, d) in by_key else 0.0 for d in datasets]
            bars = ax.bar(xs, ys, width=width, label=m)
            ax.bar_label(bars, fmt="%.1f", fontsize=7)
        ax.set_xticks(range(len(datasets)), datasets)
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 105)
        ax.set_title(title)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path
