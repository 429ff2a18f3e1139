"""Rejection-sampled distillation's bookkeeping (experiments.distill) and the ablation's curve and cost helpers.

The stages themselves run in tests/test_toy_ablation.py (a real distillation of the committed toy teacher);
here: which completions are kept, the data and split files the SFT stage then reads, ``--adapter_path none``,
the GRPO checkpoints a curve evaluates, and the cost counters read from a real ``/metrics`` page.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from experiments.ablation import ALL_ROWS, grpo_checkpoints, service_counters
from experiments.distill import DistillPaths, pick_correct, write_distilled_data
from reward_service.metrics import Metrics
from trainer.configs import DataArguments, ModelArguments
from trainer.data import load_train_dev
from trainer.records import RolloutRecord, TrajectoryRecord


def record(pid: str, gold: str | None, outputs: list[tuple[str, str | None]]) -> RolloutRecord:
    return RolloutRecord(
        id=pid,
        question=f"q {pid}",
        gold_answer=gold,
        trajectories=[TrajectoryRecord(output=o, reward=0.0, final_answer=a) for o, a in outputs],
    )


def test_pick_correct_keeps_distinct_right_completions_in_order() -> None:
    records = [
        record(
            "gsm8k-train-0",
            "12",
            [("a\n#### 12", "12"), ("b\n#### 13", "13"), ("a\n#### 12 ", "12"), ("c\n#### 12.0", "12.0")],
        ),
        record("gsm8k-train-1", "5", [("x\n#### 6", "6"), ("y", None)]),  # never right: left out
        record("gsm8k-train-2", None, [("z\n#### 1", "1")]),  # no gold: nothing can be checked
    ]
    # "a\n#### 12 " is the first completion again (stripped); "12.0" is the gold by answers_equal
    assert pick_correct(records) == {"gsm8k-train-0": ["a\n#### 12", "c\n#### 12.0"]}
    assert pick_correct(records, per_question=1) == {"gsm8k-train-0": ["a\n#### 12"]}


def _world(tmp_path: Path) -> tuple[Path, Path]:
    rows = [{"question": f"Q{i}?", "answer": f"{i}+1 = {i + 1}\n#### {i + 1}"} for i in range(6)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    split = tmp_path / "split.json"
    split.write_text(
        json.dumps(
            {
                "version": 1,
                "split_seed": 42,
                "dev_fraction": 0.2,
                "train_ids": ["gsm8k-train-0", "gsm8k-train-2", "gsm8k-train-3", "gsm8k-train-5"],
                "dev_ids": ["gsm8k-train-1", "gsm8k-train-4"],
            }
        )
    )
    return data, split


def test_distilled_data_replaces_train_rows_and_keeps_the_dev_rows(tmp_path: Path) -> None:
    data, split = _world(tmp_path)
    out = DistillPaths(tmp_path / "distill")
    picks = {"gsm8k-train-3": ["t3a\n#### 4", "t3b\n#### 4"], "gsm8k-train-0": ["t0\n#### 1"]}
    counts = write_distilled_data(data, split, picks, out)
    assert counts == {"train_questions": 4, "questions_kept": 2, "rows": 3, "dev_rows": 2}
    # the trainer's own loader reads the pair as it reads the world's data: train in the train split's order
    train, dev = load_train_dev(
        DataArguments(dataset=str(out.data), split_file=str(out.split), dev_fraction=0.2, split_seed=42)
    )
    assert [(p.question, p.solution) for p in train] == [
        ("Q0?", "t0\n#### 1"),
        ("Q3?", "t3a\n#### 4"),
        ("Q3?", "t3b\n#### 4"),
    ]
    assert [(p.question, p.gold) for p in dev] == [("Q1?", "2"), ("Q4?", "5")]  # the same dev problems, unchanged


def test_distillation_refuses_dev_questions_and_an_empty_pick(tmp_path: Path) -> None:
    data, split = _world(tmp_path)
    out = DistillPaths(tmp_path / "distill")
    with pytest.raises(ValueError, match="outside the train split"):
        write_distilled_data(data, split, {"gsm8k-train-1": ["leak\n#### 2"]}, out)
    with pytest.raises(ValueError, match="nothing to distill"):
        write_distilled_data(data, split, {}, out)
    assert not out.data.exists()


@pytest.mark.parametrize("value", ["none", "None", "NULL", ""])
def test_adapter_path_none_means_the_bare_base(value: str) -> None:
    assert ModelArguments(adapter_path=value, quantization="none").adapter_path is None
    assert ModelArguments(adapter_path="checkpoints/lora_sft").adapter_path == "checkpoints/lora_sft"


def test_the_distill_row_trains_on_correctness_from_its_own_sft() -> None:
    row = ALL_ROWS["distill_correctness"]
    assert row.distill and row.stage_flags() == ["--reward", "correctness"] and not row.needs_service


def test_grpo_checkpoints_in_step_order_without_the_final_twin(tmp_path: Path) -> None:
    for step in (100, 25, 50, 75):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
    (tmp_path / "checkpoint-125").mkdir()  # no adapter written (an interrupted save): not a point of the curve
    assert [s for s, _ in grpo_checkpoints(tmp_path)] == [25, 50, 75]
    assert grpo_checkpoints(tmp_path / "missing") == []


@pytest.fixture
def metrics_page() -> Iterator[tuple[str, Metrics]]:
    metrics = Metrics()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = metrics.render() if self.path == "/metrics" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", metrics
    finally:
        server.shutdown()
        server.server_close()


def test_service_counters_read_the_cost_of_a_reward(metrics_page: tuple[str, Metrics]) -> None:
    url, metrics = metrics_page
    fresh = service_counters(url)  # a fresh service: nothing scored, no continuation label seen yet
    assert fresh == {
        "trajectories": 0.0,
        "arm_generations": 0.0,
        "generation_seconds": 0.0,
        "continuation_seconds": 0.0,
    }
    metrics.trajectories.inc(32)
    metrics.arm_generations.inc(8)
    metrics.generation_seconds.observe(1.5)
    metrics.generation_seconds.observe(0.25)
    metrics.progress_continuations.labels(cached="false").inc(7)
    metrics.progress_continuations.labels(cached="true").inc(3)
    metrics.progress_seconds.observe(0.5)
    got = service_counters(url)
    assert got["trajectories"] == 32 and got["arm_generations"] == 8
    assert got["generation_seconds"] == pytest.approx(1.75) and got["continuation_seconds"] == pytest.approx(0.5)
    assert got["continuations_generated"] == 7 and got["continuations_reused"] == 3
