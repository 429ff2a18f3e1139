"""The toy loop's style report: how a model writes its answers to multi-step problems."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.toy_loop import count_steps, format_styles, style_report
from trainer.toy.problems import generate_problems


@pytest.mark.parametrize("style", ["steps", "one_line"])
@pytest.mark.parametrize("annotate", [True, False])
def test_count_steps_reads_the_number_of_steps_in_either_style(style: str, annotate: bool) -> None:
    for p in generate_problems(600, seed=21):
        assert count_steps(p.solution(annotate=annotate, style=style)) == len(p.steps)


def test_count_steps_of_text_without_equations_is_zero() -> None:
    assert count_steps("The answer is 12.\n#### 12") == 0
    assert count_steps("") == 0


def test_style_report_counts_folded_answers_on_multi_step_problems(tmp_path: Path) -> None:
    problems = [p for p in generate_problems(200, seed=4) if len(p.steps) > 1][:4]
    one_step = next(p for p in generate_problems(200, seed=4) if len(p.steps) == 1)
    train = tmp_path / "train.jsonl"
    rows = [*problems, one_step]
    train.write_text("".join(json.dumps(p.to_json()) + "\n" for p in rows))
    preds = []

    def pred(model: str, i: int, output: str, correct: bool, dataset: str = "gsm8k_dev") -> None:
        preds.append(
            {
                "model": model,
                "dataset": dataset,
                "id": f"gsm8k-train-{i}",
                "gold": "0",
                "prediction": "0",
                "correct": correct,
                "format_ok": True,
                "output": output,
            }
        )

    for i, p in enumerate(problems):
        # sft: two folded (one right), two stepwise (both right); rl: all stepwise, three right
        pred("sft", i, p.solution(annotate=False, style="one_line" if i < 2 else "steps"), i != 1)
        pred("rl-grpo", i, p.solution(annotate=False, style="steps"), i != 3)
    pred("sft", 4, one_step.solution(annotate=False), True)  # one-step problems are not counted
    pred("sft", 0, problems[0].solution(annotate=False), True, dataset="gsm8k_test")  # other dataset
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in preds))

    report = style_report(path, train)
    assert report["sft"] == {
        "multi_step": 4,
        "folded": 2,
        "folded_correct": 1,
        "stepwise_correct": 2,
        "folded_share": 0.5,
        "folded_accuracy": 0.5,
        "stepwise_accuracy": 1.0,
    }
    assert report["rl-grpo"]["folded_share"] == 0.0 and report["rl-grpo"]["folded_accuracy"] is None
    assert report["rl-grpo"]["stepwise_accuracy"] == 0.75
    text = format_styles(report)
    assert "sft" in text and "50.0%" in text and "75.0%" in text
