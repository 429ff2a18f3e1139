"""End to end: every trainer stage in order through the real ``regime-w-train`` CLI, on the tiny model,
with the real reward service (``regime-w-serve --backend hf``) running under uvicorn on loopback.

sft -> rollouts -> prefs -> dpo -> grpo -> eval -> export, each checked on its artifact: adapters load
with PEFT, JSONL files match their schema, the eval table agrees with the per-question file, the
merged model loads with transformers. About 100 s on 2 cores; part of the default suite (issue 3).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared_schemas.answer import answers_equal
from tests.support.servers import ServiceSpec

API_KEY = "e2e-test-key-0123456789abcdef"
ROLLOUT_KEYS = {
    "id",
    "question",
    "gold_answer",
    "consensus_answer",
    "trajectories",
    "scorer",
    "reward_mode",
    "label_free",
}
TRAJECTORY_KEYS = {
    "output",
    "reward",
    "correctness",
    "s_end",
    "s_path",
    "s_cf",
    "s_wm",
    "length_penalty",
    "final_answer",
    "format_ok",
    "num_tokens",
    "seed",
    "temperature",
}
PREF_KEYS = {
    "id",
    "question",
    "better",
    "worse",
    "better_reward",
    "worse_reward",
    "margin",
    "reward_mode",
    "label_free",
}
PREDICTION_KEYS = {"model", "dataset", "id", "gold", "prediction", "correct", "format_ok", "output"}
ROLLOUT_QUESTIONS = 4
NUM_SAMPLES = 6


def write_data(workdir: Path) -> None:
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    train = [
        {
            "question": f"Tom has {10 + i} apples and buys {i + 2} more. How many apples does he have?",
            "answer": f"Tom has {10 + i} + {i + 2} = <<{10 + i}+{i + 2}={12 + 2 * i}>>{12 + 2 * i} apples.\n#### {12 + 2 * i}",
        }
        for i in range(10)
    ]
    platinum = [
        {
            "question": f"A box holds {3 + i} pens. How many pens are in 2 boxes?",
            "answer": f"{3 + i}*2=<<{3 + i}*2={6 + 2 * i}>>{6 + 2 * i}\n#### {6 + 2 * i}",
            "cleaning_status": status,
        }
        for i, status in enumerate(["consensus", "rejected", "verified"])
    ]
    for name, rows in (("train.jsonl", train), ("platinum.jsonl", platinum)):
        (workdir / "data" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def recipes(workdir: Path, model: Path, url: str) -> dict[str, Path]:
    base = {"model_name_or_path": str(model), "quantization": "4bit"}
    data = {
        "dataset": "data/train.jsonl",
        "split_file": "data/gsm8k_split.json",
        "dev_fraction": 0.2,
        "platinum": "data/platinum.jsonl",
    }
    lora = {"lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0}
    train = {
        "bf16": False,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 1,
        "gradient_checkpointing": False,
        "optim": "adamw_torch",
        "seed": 0,
    }
    stages = {
        "sft": {
            **base,
            **lora,
            **data,
            **train,
            "output_dir": "checkpoints/lora_sft",
            "max_length": 96,
            "max_steps": 2,
            "per_device_train_batch_size": 2,
            "learning_rate": 1e-3,
        },
        "rollouts": {
            **base,
            **data,
            "adapter_path": "checkpoints/lora_sft",
            "reward_url": url,
            "max_train_samples": ROLLOUT_QUESTIONS,
            "rollouts_file": "data/rl_rollouts.jsonl",
            "num_samples": NUM_SAMPLES,
            "temperatures": [0.6, 1.0, 1.4],
            "top_p": 0.95,
            "max_new_tokens": 16,
            "generation_batch_size": 24,
        },
        "prefs": {
            "rollouts_file": "data/rl_rollouts.jsonl",
            "preferences_file": "data/preferences.jsonl",
            "min_margin": 0.0,
        },
        "dpo": {
            **base,
            "adapter_path": "checkpoints/lora_sft",
            "preferences_file": "data/preferences.jsonl",
            **train,
            "output_dir": "checkpoints/lora_rl",
            "max_length": 96,
            "max_steps": 1,
            "per_device_train_batch_size": 1,
            "learning_rate": 1e-3,
        },
        "grpo": {
            **base,
            **data,
            "adapter_path": "checkpoints/lora_sft",
            "reward_url": url,
            "max_train_samples": 2,
            **train,
            "output_dir": "checkpoints/lora_grpo",
            "num_generations": 2,
            "per_device_train_batch_size": 2,
            "max_completion_length": 8,
            "max_steps": 1,
            "learning_rate": 1e-3,
            "use_vllm": False,
        },
        "eval": {
            **base,
            **data,
            "max_eval_samples": 2,
            "eval_output_dir": "results/eval",
            "eval_models": [
                {"name": "base", "adapter_path": None},
                {"name": "sft", "adapter_path": "checkpoints/lora_sft"},
                {"name": "rl", "adapter_path": "checkpoints/lora_rl"},
                {"name": "grpo", "adapter_path": "checkpoints/lora_grpo"},
            ],
            "eval_datasets": ["gsm8k_dev", "platinum"],
            "max_new_tokens": 8,
            "eval_batch_size": 8,
        },
        "export": {
            "model_name_or_path": str(model),
            "adapter_path": "checkpoints/lora_rl",
            "output_dir": "checkpoints/merged",
            "export_dtype": "float32",
            "export_quantization": "none",
        },
    }
    paths = {}
    (workdir / "recipes").mkdir(exist_ok=True)
    for stage, values in stages.items():
        path = workdir / "recipes" / f"{stage}.yaml"
        path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
        paths[stage] = path
    return paths


def train_cli(stage: str, recipe: Path, workdir: Path) -> dict:
    """Run ``regime-w-train STAGE --config RECIPE`` as a subprocess; return its JSON summary."""
    exe = shutil.which("regime-w-train")
    argv = [exe] if exe else [sys.executable, "-m", "trainer.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "REGIME_W_API_KEY": API_KEY, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(
        [*argv, stage, "--config", str(recipe)], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    start = proc.stdout.rfind('{\n  "stage"')
    assert start != -1, f"{stage}: no JSON summary in\n{proc.stdout[-2000:]}"
    return json.loads(proc.stdout[start:])


def load_adapter(model: Path, adapter: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert (adapter / "adapter_config.json").is_file(), f"no adapter in {adapter}"
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model), str(adapter))


def adapter_weights(adapter: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def jsonl(path: Path) -> list[dict]:
    data = path.read_text()
    assert data.endswith("\n"), f"{path}: torn last line"
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture(scope="module")
def service_spec() -> ServiceSpec:
    """``live_service`` here: hf backend on the tiny model, short arms."""
    return ServiceSpec("hf", api_key=API_KEY)


@pytest.fixture(scope="module")
def service(live_service):
    return live_service


def test_every_stage_in_order(service, tiny_model_dir, tmp_path):
    import torch

    write_data(tmp_path)
    recipe = recipes(tmp_path, tiny_model_dir, service.url)

    # sft: the adapter and the saved split
    train_cli("sft", recipe["sft"], tmp_path)
    sft_dir = tmp_path / "checkpoints" / "lora_sft"
    assert load_adapter(tiny_model_dir, sft_dir).peft_config["default"].r == 4
    split = json.loads((tmp_path / "data" / "gsm8k_split.json").read_text())
    assert len(split["train_ids"]) == 8 and len(split["dev_ids"]) == 2

    # rollouts: one line per question, every trajectory scored by the service
    summary = train_cli("rollouts", recipe["rollouts"], tmp_path)
    assert summary["written"] == ROLLOUT_QUESTIONS
    rollouts = jsonl(tmp_path / "data" / "rl_rollouts.jsonl")
    assert [r["id"] for r in rollouts] == split["train_ids"][:ROLLOUT_QUESTIONS]
    for r in rollouts:
        assert set(r) == ROLLOUT_KEYS and r["scorer"]["name"] == "regime-w"
        assert (r["reward_mode"], r["label_free"]) == ("regime_w", False)
        assert len(r["trajectories"]) == NUM_SAMPLES
        for t in r["trajectories"]:
            assert set(t) == TRAJECTORY_KEYS
            assert t["correctness"] == float(answers_equal(t["final_answer"], r["gold_answer"]))
            assert 0.0 <= t["s_wm"] <= 1.0

    # prefs: best vs worst of each question
    summary = train_cli("prefs", recipe["prefs"], tmp_path)
    prefs = jsonl(tmp_path / "data" / "preferences.jsonl")
    assert summary["pairs_written"] == len(prefs) >= 1, summary
    assert summary["questions"] == ROLLOUT_QUESTIONS
    by_id = {r["id"]: r for r in rollouts}
    for p in prefs:
        assert set(p) == PREF_KEYS and (p["reward_mode"], p["label_free"]) == ("regime_w", False)
        rewards = [t["reward"] for t in by_id[p["id"]]["trajectories"]]
        assert p["better_reward"] == max(rewards) and p["worse_reward"] == min(rewards) and p["margin"] > 0

    # dpo: a new adapter, changed from the SFT one
    train_cli("dpo", recipe["dpo"], tmp_path)
    rl_dir = tmp_path / "checkpoints" / "lora_rl"
    load_adapter(tiny_model_dir, rl_dir)
    sft_w, rl_w = adapter_weights(sft_dir), adapter_weights(rl_dir)
    assert any(not torch.equal(sft_w[k], rl_w[k]) for k in sft_w)

    # grpo: one online step with the reward over HTTP; components logged
    summary = train_cli("grpo", recipe["grpo"], tmp_path)
    assert summary["global_step"] == 1
    assert all(len(v) == 1 and v[0] is not None for v in summary["components_per_step"].values())
    load_adapter(tiny_model_dir, tmp_path / "checkpoints" / "lora_grpo")

    # eval: 4 models x (2 dev + 2 Platinum, its rejected row left out); table agrees with the file
    train_cli("eval", recipe["eval"], tmp_path)
    out = tmp_path / "results" / "eval"
    predictions = jsonl(out / "predictions.jsonl")
    assert len(predictions) == 4 * (2 + 2)
    assert {p["id"] for p in predictions if p["dataset"] == "platinum"} == {"platinum-test-0", "platinum-test-2"}
    assert {p["id"] for p in predictions if p["dataset"] == "gsm8k_dev"} == set(split["dev_ids"])
    counts: dict[tuple[str, str], list[int]] = {}
    for p in predictions:
        assert set(p) == PREDICTION_KEYS
        assert p["correct"] == answers_equal(p["prediction"], p["gold"])
        c = counts.setdefault((p["model"], p["dataset"]), [0, 0])
        c[0] += 1
        c[1] += int(p["correct"])
    results = json.loads((out / "results.json").read_text())
    table = (out / "results.md").read_text()
    assert {(c["model"], c["dataset"]): [c["n"], c["correct"]] for c in results["results"]} == counts
    for (model, _dataset), (n, correct) in counts.items():
        assert re.search(rf"^\| {model} \|.*{100 * correct / n:.1f}% \({correct}/{n}\)", table, re.M)
    assert (out / "accuracy.png").read_bytes().startswith(b"\x89PNG")

    # export: the merged model loads without PEFT
    train_cli("export", recipe["export"], tmp_path)
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoints" / "merged")
    assert merged.config.num_hidden_layers == 2
