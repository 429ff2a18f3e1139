"""The reward ablation's bookkeeping (experiments.ablation): rows, flags, summary, the bar, the report.

The training itself runs in the learning tests (tests/test_toy_learning.py: the one-seed slice) and in
the ablation command (docs/reward-ablation.md); here the arithmetic and the page are checked on
hand-made cells.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments.ablation import ALL_ROWS, ROWS, _overrides, collect, summarize, write_report
from experiments.toy_loop import NOTES_MARKER, ROOT

SFT = {0: 0.44, 1: 0.43, 2: 0.45}


def cell(row: str, seed: int, dpo: float, grpo: float) -> dict[str, Any]:
    acc = lambda a: {"accuracy": a, "correct": round(a * 800), "n": 800}  # noqa: E731
    return {
        "row": row,
        "seed": seed,
        "table": {"gsm8k_dev": {"rl-dpo": acc(dpo), "rl-grpo": acc(grpo)}},
        "base_sft": {"gsm8k_dev": {"base": acc(0.42), "sft": acc(SFT[seed])}},
    }


def results(rows: dict[str, tuple[list[float], list[float]]]) -> dict[str, Any]:
    return {
        "recipes": "recipes/toy",
        "cells": {
            f"seed{s}/{name}": cell(name, s, dpo[s], grpo[s]) for name, (dpo, grpo) in rows.items() for s in range(3)
        },
    }


def test_the_controls_and_their_stage_flags() -> None:
    assert [r.name for r in ROWS] == ["regime_w", "correctness", "regime_w_label_free", "majority"]
    assert ALL_ROWS["regime_w_label_free"].stage_flags() == ["--reward", "regime_w", "--label_free", "true"]
    assert ALL_ROWS["majority"].stage_flags() == ["--reward", "majority"] and not ALL_ROWS["majority"].needs_service
    for row in ALL_ROWS.values():  # every variant's scorer config is in the repository
        assert row.scorer_config is None or (ROOT / row.scorer_config).is_file(), row


def test_summary_means_spread_and_gain_over_sft() -> None:
    s = summarize(results({"correctness": ([0.48, 0.48, 0.47], [0.50, 0.49, 0.48])}))
    r = s["rows"]["correctness"]
    assert r["dpo_mean"] == pytest.approx(47.6667, abs=1e-3)
    assert r["grpo_sd"] == pytest.approx(1.0)
    assert r["grpo_minus_sft"] == pytest.approx(49.0 - 44.0)
    assert s["sft"] == {0: 44.0, 1: 43.0, 2: 45.0}


def test_the_bar_needs_two_points_and_every_seed_with_gold(tmp_path: Path) -> None:
    data = results(
        {
            "correctness": ([0.48, 0.48, 0.48], [0.49, 0.49, 0.49]),
            "regime_w": ([0.51, 0.51, 0.51], [0.52, 0.52, 0.48]),  # DPO +3 on every seed; GRPO one seed behind
            "majority": ([0.46, 0.46, 0.46], [0.43, 0.43, 0.43]),
            "regime_w_label_free": ([0.46, 0.46, 0.47], [0.48, 0.48, 0.48]),
        }
    )
    page = write_report(data, tmp_path / "ablation.md", "python scripts/toy_loop.py --ablation")
    text = page.read_text(encoding="utf-8")
    assert "| `regime_w` | DPO | correctness | +3.0 / +3.0 / +3.0 | +3.00 | yes |" in text
    assert "| `regime_w` | GRPO | correctness | +3.0 / +3.0 / -1.0 | +1.67 | no |" in text
    assert "| `regime_w_label_free` | GRPO | majority | +5.0 / +5.0 / +5.0 | +5.00 | yes |" in text
    assert "| `regime_w_label_free` | DPO | majority | +0.0 / +0.0 / +1.0 | +0.33 | no |" in text
    assert (tmp_path / "ablation.png").stat().st_size > 1000


def test_the_report_keeps_its_notes_and_names_what_did_not_run(tmp_path: Path) -> None:
    page = tmp_path / "ablation.md"
    page.write_text(f"old table\n\n{NOTES_MARKER}\nhand-written notes\n", encoding="utf-8")
    data = results({"correctness": ([0.48] * 3, [0.49] * 3)})
    del data["cells"]["seed2/correctness"]
    data["cells"]["seed2/majority"] = cell("majority", 2, 0.46, 0.43)
    text = write_report(data, page, "cmd").read_text(encoding="utf-8")
    assert "old table" not in text and text.endswith("hand-written notes\n")
    assert "Not run: correctness (seeds 2); majority (seeds 0, 1)." in text


def test_collect_reads_every_finished_cell(tmp_path: Path) -> None:
    for key in ("seed0/regime_w", "seed1/majority"):
        (tmp_path / key).mkdir(parents=True)
        (tmp_path / key / "result.json").write_text(json.dumps({"row": key}), encoding="utf-8")
    (tmp_path / "seed0" / "correctness").mkdir()  # unfinished: no result.json
    assert sorted(collect(tmp_path)["cells"]) == ["seed0/regime_w", "seed1/majority"]


def test_set_overrides_per_stage() -> None:
    assert _overrides(["toy-base:--number_scale=1.0", "grpo:--max_steps=4", "dpo:--loss_type=sigmoid sft"]) == {
        "toy-base": ["--number_scale", "1.0"],
        "grpo": ["--max_steps", "4"],
        "dpo": ["--loss_type", "sigmoid", "sft"],
    }
    with pytest.raises(ValueError, match="STAGE:--flag=value"):
        _overrides(["number_scale=1"])


def test_a_cell_whose_prefs_wrote_no_pairs_has_grpo_but_no_dpo(tmp_path: Path) -> None:
    """Label-free rewards that tie every group leave prefs nothing to pair (the hard world with toy-base arms,
    docs/reward-ablation-hard.md): the cell keeps its GRPO result, the summary leaves DPO out for those seeds, and the
    page says so."""
    data = results(
        {
            "majority": ([0.46, 0.46, 0.46], [0.43, 0.43, 0.43]),
            "regime_w_label_free": ([0.45, 0.45, 0.45], [0.47, 0.46, 0.48]),
        }
    )
    for seed in (1, 2):
        del data["cells"][f"seed{seed}/regime_w_label_free"]["table"]["gsm8k_dev"]["rl-dpo"]
    r = summarize(data)["rows"]["regime_w_label_free"]
    assert r["dpo"] == {0: 45.0} and r["grpo"] == {0: 47.0, 1: 46.0, 2: 48.0}
    assert r["dpo_mean"] == pytest.approx(45.0) and r["grpo_minus_sft"] == pytest.approx(47.0 - 44.0)
    text = write_report(data, tmp_path / "ablation.md", "cmd").read_text(encoding="utf-8")
    assert (
        "No DPO run (prefs wrote no pairs: every group tied or under the margin): regime_w_label_free (seeds 1, 2)."
        in text
    )
    assert "| `regime_w_label_free` | GRPO | majority | +4.0 / +3.0 / +5.0 | +4.00 | yes |" in text
    assert "| `regime_w_label_free` | DPO | majority | -1.0 | -1.00 | no |" in text


def test_distill_sft_runs_the_real_stages_on_the_committed_teacher(tmp_path: Path) -> None:
    """The distill control's first half through the real stages (experiments.distill): rollouts of the committed
    hard-world teacher (the bare model, ``--adapter_path none``) on 12 train questions, its right completions kept,
    SFT on them; a second call finds everything done and runs nothing."""
    from experiments.ablation import AblationSettings, _Stages
    from experiments.distill import DistillPaths, distill_sft
    from shared_schemas.answer import answers_equal, gold_answer
    from trainer.jsonl import read_records
    from trainer.records import RolloutRecord
    from trainer.toy.problems import generate_problems, write_jsonl

    teacher = ROOT / "assets" / "toy_teacher_hard"
    problems = generate_problems(16, seed=3, number_scale=1.0)
    data = write_jsonl(problems, tmp_path / "data" / "train.jsonl")
    write_jsonl(problems[:2], tmp_path / "data" / "test.jsonl")
    split = tmp_path / "data" / "split.json"
    ids = [f"gsm8k-train-{i}" for i in range(16)]
    split.write_text(
        json.dumps({"version": 1, "split_seed": 42, "dev_fraction": 0.2, "train_ids": ids[:12], "dev_ids": ids[12:]})
    )
    said: list[str] = []
    stages = _Stages(AblationSettings(workdir=tmp_path), said.append)
    paths = DistillPaths(tmp_path / "distill")
    kwargs: dict[str, Any] = dict(
        teacher=teacher, base=teacher, data=data, test=tmp_path / "data" / "test.jsonl", split=split, seed=0, samples=2
    )
    stats = distill_sft(stages, paths, **kwargs)

    records = list(read_records(paths.rollouts, RolloutRecord))
    assert [r.id for r in records] == ids[:12] and all(len(r.trajectories) == 2 for r in records)  # train split only
    right = {r.id for r in records if any(answers_equal(t.final_answer or "", r.gold_answer) for t in r.trajectories)}
    assert stats["questions_kept"] == len(right) > 0 and stats["train_questions"] == 12 and stats["dev_rows"] == 4
    rows = [json.loads(line) for line in paths.data.read_text().splitlines()]
    assert len(rows) == stats["rows"] + 4
    for row in rows[: stats["rows"]]:  # every distilled row is a teacher completion that reaches its gold
        gold = next(r.gold_answer for r in records if r.question == row["question"])
        assert gold_answer(row["answer"]) == gold
    assert rows[stats["rows"] :] == [p.to_json(annotate=True) for p in problems[12:]]  # the dev rows, unchanged
    assert (paths.adapter / "adapter_config.json").is_file()
    assert any("sft done" in line for line in said)

    said.clear()
    assert distill_sft(stages, paths, **kwargs) == stats and said == []
