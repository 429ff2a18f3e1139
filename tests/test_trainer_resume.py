"""``--resume`` (issue 11 item 5): a training stage continues from its last checkpoint.

The GRPO test kills a real run (``regime-w-train grpo`` in a subprocess, the tiny model, the real
reward service on loopback) once its first checkpoint is on disk, then resumes it to completion:
the resumed process starts from that checkpoint's step and scores only the steps that were left.
SFT and DPO resume through the same code path (``trainer.checkpoints``); their tests stop a run
at a step limit and continue it to a higher one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.limits import HANG_GUARD_S
from trainer.checkpoints import apply_resume, last_checkpoint, resume_path
from trainer.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]


def write_train(path: Path, n: int = 16) -> Path:
    rows = [
        {
            "question": f"A box holds {3 + i} pens. How many pens are in 2 boxes?",
            "answer": f"{3 + i}*2={6 + 2 * i}\n#### {6 + 2 * i}",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_recipe(path: Path, values: dict[str, Any]) -> Path:
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()), encoding="utf-8")
    return path


def last_json(stdout: str) -> dict[str, Any]:
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def fake_checkpoint(root: Path, step: int, *, complete: bool = True) -> Path:
    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    if complete:
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return ckpt


# ------------------------------------------------------------------------------ resolution rules


def test_last_checkpoint_is_the_highest_complete_one(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path / "missing") is None
    assert last_checkpoint(tmp_path) is None
    fake_checkpoint(tmp_path, 2)
    fake_checkpoint(tmp_path, 10)
    fake_checkpoint(tmp_path, 12, complete=False)  # killed while saving
    (tmp_path / "checkpoint-x").mkdir()
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-10"


def test_resume_path_rules(tmp_path: Path) -> None:
    from trl import SFTConfig

    config = SFTConfig(output_dir=str(tmp_path), report_to="none", bf16=False)
    assert resume_path(config) is None
    config.resume_from_checkpoint = "last"
    with pytest.raises(ValueError, match="no checkpoint-N"):
        resume_path(config)
    fake_checkpoint(tmp_path, 3)
    assert resume_path(config) == str(tmp_path / "checkpoint-3")
    config.resume_from_checkpoint = str(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="not a checkpoint directory"):
        resume_path(config)
    config.resume_from_checkpoint = "last"
    config.save_only_model = True
    with pytest.raises(ValueError, match="save_only_model: false"):
        resume_path(config)
    # the CLI's --resume on a stage that does not train is refused
    with pytest.raises(ValueError, match="stages that train"):
        apply_resume((object(),), resume=True)


def test_cli_resume_without_a_checkpoint_and_on_a_stage_that_does_not_train(tmp_path: Path, capsys) -> None:
    out = tmp_path / "sft-out"
    code = cli_main(
        ["sft", "--config", str(ROOT / "recipes/toy/sft.yaml"), "--output_dir", str(out), "--resume", "--dry-run"]
    )
    assert code == 2 and "no checkpoint-N" in capsys.readouterr().err
    fake_checkpoint(out, 7)
    code = cli_main(
        ["sft", "--config", str(ROOT / "recipes/toy/sft.yaml"), "--output_dir", str(out), "--resume", "--dry-run"]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["resume_from_checkpoint"] == str(out / "checkpoint-7")
    code = cli_main(["prefs", "--config", str(ROOT / "recipes/toy/prefs.yaml"), "--resume", "--dry-run"])
    assert code == 2 and "stages that train" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- SFT and DPO


def test_sft_and_dpo_resume_from_their_last_checkpoint(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    write_train(tmp_path / "train.jsonl")
    recipe = write_recipe(
        tmp_path / "sft.yaml",
        {
            "model_name_or_path": str(tiny_model_dir),
            "quantization": "none",
            "torch_dtype": "float32",
            "dataset": "train.jsonl",
            "split_file": "split.json",
            "lora_r": 4,
            "lora_alpha": 8,
            "output_dir": "out",
            "per_device_train_batch_size": 2,
            "max_length": 192,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_strategy": "steps",
            "save_steps": 1,
            "report_to": "none",
            "gradient_checkpointing": False,
            "bf16": False,
            "seed": 3,
        },
    )
    assert cli_main(["sft", "--config", str(recipe), "--max_steps", "2"]) == 0
    first = last_json(capsys.readouterr().out)
    assert first["global_step"] == 2 and "resumed_from" not in first
    assert cli_main(["sft", "--config", str(recipe), "--max_steps", "4", "--resume"]) == 0
    second = last_json(capsys.readouterr().out)
    assert second["global_step"] == 4
    assert second["resumed_from"] == str(Path("out") / "checkpoint-2")
    state = json.loads((tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4]

    # DPO from that adapter, stopped at step 1 and continued to step 2
    pairs = [
        {
            "id": f"q{i}",
            "question": f"What is {i} + 2?",
            "better": f"{i} + 2 = {i + 2}\n#### {i + 2}",
            "worse": f"{i} + 2 = {i + 3}\n#### {i + 3}",
            "better_reward": 1.0,
            "worse_reward": 0.0,
        }
        for i in range(8)
    ]
    (tmp_path / "prefs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs), encoding="utf-8")
    dpo = write_recipe(
        tmp_path / "dpo.yaml",
        {
            "model_name_or_path": str(tiny_model_dir),
            "adapter_path": "out",
            "quantization": "none",
            "torch_dtype": "float32",
            "preferences_file": "prefs.jsonl",
            "output_dir": "dpo",
            "per_device_train_batch_size": 2,
            "max_length": 192,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "save_strategy": "steps",
            "save_steps": 1,
            "report_to": "none",
            "gradient_checkpointing": False,
            "bf16": False,
            "seed": 3,
        },
    )
    assert cli_main(["dpo", "--config", str(dpo), "--max_steps", "1"]) == 0
    assert last_json(capsys.readouterr().out)["global_step"] == 1
    assert cli_main(["dpo", "--config", str(dpo), "--max_steps", "2", "--resume"]) == 0
    resumed = last_json(capsys.readouterr().out)
    assert resumed["global_step"] == 2 and resumed["resumed_from"] == str(Path("dpo") / "checkpoint-1")


# ------------------------------------------------------------------------- GRPO, killed and resumed


def test_grpo_killed_after_a_checkpoint_resumes_to_completion(
    live_service, tiny_model_dir: Path, tmp_path: Path
) -> None:
    max_steps, save_steps = 6, 2
    write_train(tmp_path / "train.jsonl")
    recipe = write_recipe(
        tmp_path / "grpo.yaml",
        {
            "model_name_or_path": str(tiny_model_dir),
            "quantization": "none",
            "torch_dtype": "float32",
            "lora_r": 4,
            "lora_alpha": 8,
            "dataset": "train.jsonl",
            "split_file": "split.json",
            "max_train_samples": 8,
            "reward_url": live_service.url,
            "output_dir": "out",
            "num_generations": 4,
            "per_device_train_batch_size": 4,
            "gradient_accumulation_steps": 1,
            "max_completion_length": 12,
            "max_steps": max_steps,
            "learning_rate": 1e-3,
            "logging_steps": 1,
            "temperature": 1.0,
            "bf16": False,
            "use_vllm": False,
            "report_to": "none",
            "save_strategy": "steps",
            "save_steps": save_steps,
            "save_only_model": False,
            "seed": 1,
        },
    )
    env = {
        **os.environ,
        "REGIME_W_API_KEY": live_service.api_key,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "trainer.cli", "grpo", "--config", str(recipe)]

    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while last_checkpoint(tmp_path / "out") is None:
            assert first.poll() is None, (
                f"GRPO exited ({first.returncode}) before its first checkpoint:\n"
                + (tmp_path / "first.log").read_text()[-3000:]
            )
            assert time.monotonic() < deadline, "no checkpoint in 10 minutes"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=HANG_GUARD_S)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log.close()
    assert first.returncode == -signal.SIGKILL  # killed mid-run, not finished
    killed_at = last_checkpoint(tmp_path / "out")
    assert killed_at is not None
    step = int(killed_at.name.split("-")[1])
    assert step < max_steps and not (tmp_path / "out" / "adapter_model.safetensors").exists()

    second = subprocess.run(
        [*cmd, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert second.returncode == 0, second.stderr[-4000:]
    summary = last_json(second.stdout)
    assert summary["resumed_from"] == str(Path("out") / killed_at.name)
    assert summary["global_step"] == max_steps
    # the resumed process scored only the steps that were left (one reward call per step here)
    assert summary["reward_calls"] == max_steps - step, summary
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    state = json.loads((tmp_path / "out" / f"checkpoint-{max_steps}" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "reward" in e] == list(range(1, max_steps + 1))
