"""The ablation's curves and per-step costs (experiments.ablation_curves) on hand-made cells."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments.ablation_curves import cell_curve, curves, format_costs, format_curves, main, step_cost


def acc(a: float) -> dict[str, Any]:
    return {"accuracy": a, "correct": round(a * 800), "n": 800}


def cell(row: str, seed: int, points: dict[int, float], sft: float, **extra: Any) -> dict[str, Any]:
    *saved, end = sorted(points)
    table = {f"grpo-step{s}": acc(points[s]) for s in saved} | {"rl-grpo": acc(points[end]), "rl-dpo": acc(0.1)}
    return {
        "row": row,
        "seed": seed,
        "table": {"gsm8k_dev": table},
        "base_sft": {"gsm8k_dev": {"base": acc(0.12), "sft": acc(sft)}},
        "grpo_checkpoints": saved,
        "grpo_steps": end,
        **extra,
    }


def test_a_curve_starts_at_the_sft_adapter_and_ends_at_the_final_one() -> None:
    c = cell("correctness", 0, {50: 0.15, 100: 0.14, 150: 0.13}, sft=0.16)
    assert cell_curve(c) == [(0, 0.16), (50, 0.15), (100, 0.14), (150, 0.13)]
    distilled = cell("distill_correctness", 0, {150: 0.30}, sft=0.16)
    distilled["table"]["gsm8k_dev"]["sft-distill"] = acc(0.25)  # GRPO started from the distilled SFT
    assert cell_curve(distilled) == [(0, 0.25), (150, 0.30)]
    with pytest.raises(ValueError, match="how many GRPO steps"):
        cell_curve({**c, "grpo_steps": None})


def test_curves_mean_and_range_over_seeds_and_arms_labels() -> None:
    toy = {
        "cells": {
            f"seed{s}/{row}": cell(row, s, {75: a, 150: b}, sft=0.16)
            for row, vals in {
                "correctness": [(0.15, 0.14), (0.17, 0.16)],
                "regime_w": [(0.16, 0.18), (0.16, 0.20)],
            }.items()
            for s, (a, b) in enumerate(vals)
        }
    }
    teacher = {"cells": {"seed0/correctness": cell("correctness", 0, {75: 0.9, 150: 0.9}, sft=0.16)}}
    stats = curves([("toy base", toy), ("teacher", teacher)])
    assert list(stats) == ["correctness", "regime_w (toy base arms)"]  # the teacher file's correctness: not read
    end = stats["regime_w (toy base arms)"][-1]
    assert (end.step, end.n) == (150, 2) and end.mean == pytest.approx(0.19)
    assert (end.low, end.high) == (0.18, 0.20)
    assert stats["correctness"][1].mean == pytest.approx(0.16)
    table = format_curves(stats)
    assert "| regime_w (toy base arms) | 16.0 [16.0, 16.0] | 16.0 [16.0, 16.0] | 19.0 [18.0, 20.0] |" in table


def test_step_cost_divides_the_grpo_counters_by_its_steps() -> None:
    c = cell(
        "regime_w_progress",
        0,
        {150: 0.2},
        sft=0.16,
        grpo_reward_wait_s_per_step=[0.5, None, 0.1],
        service_cost={
            "rollouts": {"arm_generations": 3200.0},
            "grpo": {
                "arm_generations": 30.0,
                "continuations_generated": 1500.0,
                "continuations_reused": 300.0,
                "generation_seconds": 15.0,
                "continuation_seconds": 60.0,
            },
        },
    )
    cost = step_cost(c)
    assert cost == pytest.approx(
        {
            "wait_s": 0.3,
            "arm_generations": 0.2,
            "continuations_generated": 10.0,
            "continuations_reused": 2.0,
            "generation_seconds": 0.5,
        }
    )
    plain = step_cost(cell("correctness", 0, {150: 0.2}, sft=0.16))  # no service: it cost nothing there
    assert set(plain.values()) == {0.0}
    text = format_costs([("teacher", {"cells": {"seed0/regime_w_progress": c}})])
    assert "| regime_w_progress (teacher arms) | 1 | 0.300 | 0.20 | 10.0 | 2.0 | 0.50 |" in text


def test_the_command_reads_its_files_after_parsing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Arguments name files (parsed without reading them: the docs' commands are parsed where no run exists); main
    reads them and prints both tables."""
    cells = {f"seed{s}/correctness": cell("correctness", s, {75: 0.15, 150: 0.17}, sft=0.16) for s in range(2)}
    path = tmp_path / "ablation.json"
    path.write_text(json.dumps({"cells": cells}))
    assert main([f"toy base={path}"]) == 0
    out = capsys.readouterr().out
    assert "| correctness | 16.0 [16.0, 16.0] | 15.0 [15.0, 15.0] | 17.0 [17.0, 17.0] |" in out
    assert "| correctness | 2 | 0.000 |" in out
    with pytest.raises(SystemExit):
        main(["no-label-here"])
