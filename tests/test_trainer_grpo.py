"""Stage ``grpo``: two GRPO steps on the tiny model (4-bit base + SFT adapter) with the real service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.servers import ServiceSpec
from trainer.cli import main as cli_main
from trainer.configs import DataArguments, LoraArguments, ModelArguments, RewardServiceArguments
from trainer.stages.grpo import GRPOStageConfig, build_dataset, plan


@pytest.fixture(scope="module")
def service_spec() -> ServiceSpec:
    """``live_service`` here: hf backend on the tiny model, short arms, this module's key."""
    return ServiceSpec("hf", api_key="grpo-test-key-0123456789")


@pytest.fixture(scope="module")
def service(live_service):
    return live_service


@pytest.fixture(scope="module")
def sft_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A stand-in SFT adapter: LoRA on q/k/v/o of the tiny model, non-zero weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=4,
            lora_alpha=8,
            init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    out = tmp_path_factory.mktemp("lora_sft")
    peft_model.save_pretrained(out)
    return out


def write_train(path: Path, n: int = 8) -> Path:
    rows = [
        {
            "question": f"A box holds {3 + i} pens. How many pens are in 2 boxes?",
            "answer": f"{3 + i}*2={6 + 2 * i}\n#### {6 + 2 * i}",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def adapter_tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_two_grpo_steps_from_the_sft_adapter(service, tiny_model_dir, sft_adapter, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGIME_W_API_KEY", "grpo-test-key-0123456789")
    write_train(tmp_path / "train.jsonl")
    recipe = tmp_path / "grpo.yaml"
    values = {
        "model_name_or_path": str(tiny_model_dir),
        "adapter_path": str(sft_adapter),
        "quantization": "4bit",
        "dataset": "train.jsonl",
        "split_file": "split.json",
        "max_train_samples": 4,
        "reward_url": service.url,
        "output_dir": "checkpoints/lora_grpo",
        "num_generations": 4,
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "max_completion_length": 12,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
        "temperature": 1.0,
        "bf16": True,
        "use_vllm": False,  # bf16 is switched off without CUDA
        "report_to": "none",
        "save_strategy": "no",
        "seed": 1,
    }
    recipe.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    assert cli_main(["grpo", "--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index('{\n  "stage"') :])
    assert summary["global_step"] == 2 and summary["questions"] == 4
    for name in ("s_end", "s_path", "s_cf", "s_wm", "correctness"):
        per_step = summary["components_per_step"][name]
        assert len(per_step) == 2 and all(isinstance(v, float) for v in per_step), (name, per_step)
    assert summary["reward_http_calls_per_step"] == [1.0, 1.0]  # one request per GRPO step
    record = {"reward": "regime_w", "label_free": False, "service_url": service.url, "function": "regime_w"}
    assert summary["reward"] == record
    assert json.loads((tmp_path / "checkpoints" / "lora_grpo" / "reward_mode.json").read_text()) == record

    saved = tmp_path / "checkpoints" / "lora_grpo"
    start, end = adapter_tensors(sft_adapter), adapter_tensors(saved)
    assert start.keys() == end.keys()
    assert any(not (start[k] == end[k]).all() for k in start), "GRPO did not change the SFT adapter"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(saved))
    assert model.peft_config["default"].r == 4
    assert (saved / "tokenizer_config.json").exists()


def grpo_config(tmp_path: Path, **kw) -> GRPOStageConfig:
    return GRPOStageConfig(output_dir=str(tmp_path / "g"), report_to="none", **kw)


def test_plan_rejects_indivisible_batch(tmp_path):
    with pytest.raises(ValueError, match="divisible by num_generations"):
        plan(
            ModelArguments(),
            LoraArguments(),
            DataArguments(),
            RewardServiceArguments(),
            grpo_config(tmp_path, num_generations=4, per_device_train_batch_size=6),
        )


def test_plan_rejects_wrong_number_of_reward_weights(tmp_path):
    with pytest.raises(ValueError, match="one reward function"):
        plan(
            ModelArguments(),
            LoraArguments(),
            DataArguments(),
            RewardServiceArguments(),
            grpo_config(tmp_path, num_generations=2, per_device_train_batch_size=2, reward_weights=[1.0, 0.0]),
        )


def test_default_output_dir_and_cpu_vllm_refused(tmp_path):
    import torch

    assert (
        GRPOStageConfig(report_to="none", num_generations=2, per_device_train_batch_size=2).output_dir
        == "checkpoints/lora_grpo"
    )
    if not torch.cuda.is_available():  # the rule only applies to a CPU-only machine
        with pytest.raises(ValueError, match="use_vllm"):
            plan(
                ModelArguments(),
                LoraArguments(),
                DataArguments(),
                RewardServiceArguments(),
                grpo_config(tmp_path, num_generations=2, per_device_train_batch_size=2, use_vllm=True),
            )


def test_plan_reports_the_reward_and_policy(tmp_path):
    p = plan(
        ModelArguments(adapter_path="checkpoints/lora_sft"),
        LoraArguments(),
        DataArguments(),
        RewardServiceArguments(reward_url="http://127.0.0.1:1", label_free=True),
        grpo_config(tmp_path, num_generations=8, per_device_train_batch_size=8),
    )
    assert p["reward"] == {
        "reward": "regime_w",
        "label_free": True,
        "service_url": "http://127.0.0.1:1",
        "function": "regime_w",
        "precompute_arms": True,
    }
    q = plan(
        ModelArguments(),
        LoraArguments(),
        DataArguments(),
        RewardServiceArguments(reward="majority"),
        grpo_config(tmp_path, num_generations=8, per_device_train_batch_size=8),
    )
    assert q["reward"] == {
        "reward": "majority",
        "label_free": True,
        "service_url": None,
        "function": "majority",
        "precompute_arms": False,
    }
    assert p["policy"]["adapter_path"] == "checkpoints/lora_sft" and p["policy"]["fresh_lora"] is None


def test_dataset_uses_the_one_prompt(tiny_model_dir):
    from transformers import AutoTokenizer

    from trainer.data import Problem
    from trainer.prompts import build_prompt

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ds = build_dataset([Problem("gsm8k-train-0", "What is 2+3?", "2+3=5\n#### 5", "5")], tok)
    assert ds.column_names == ["prompt", "question", "gold_answer", "id"]
    row = ds[0]
    assert row["prompt"] == build_prompt("What is 2+3?", tok)
    assert (row["question"], row["gold_answer"], row["id"]) == ("What is 2+3?", "5", "gsm8k-train-0")
    with pytest.raises(ValueError, match="no training problems"):
        build_dataset([], tok)


# ------------------------------------------------------------------ arms precomputed before training


def arm_cache_misses(url: str) -> float:
    import httpx

    text = httpx.get(url + "/metrics", timeout=10).text
    found = [line.split()[-1] for line in text.splitlines() if line.startswith("regime_w_arm_cache_misses_total ")]
    assert found, "the service's /metrics has no regime_w_arm_cache_misses_total"
    return float(found[0])


def test_grpo_precomputes_the_arms_so_no_step_waits_on_generation(
    service, tiny_model_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGIME_W_API_KEY", "grpo-test-key-0123456789")
    rows = [
        {
            "question": f"Sam reads {5 + i} pages a day. How many pages in 3 days?",
            "answer": f"{5 + i}*3={15 + 3 * i}\n#### {15 + 3 * i}",
        }
        for i in range(10)
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    values = {
        "model_name_or_path": str(tiny_model_dir),
        "quantization": "none",
        "torch_dtype": "float32",
        "dataset": "train.jsonl",
        "split_file": "split.json",  # 8 training questions, 2 per step
        "reward_url": service.url,
        "output_dir": "checkpoints/lora_grpo",
        "lora_r": 4,
        "lora_alpha": 8,
        "num_generations": 2,
        "per_device_train_batch_size": 4,
        "max_completion_length": 8,
        "max_steps": 2,
        "logging_steps": 1,
        "use_vllm": False,
        "report_to": "none",
        "save_strategy": "no",
        "seed": 3,
    }
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))

    assert cli_main(["grpo", "--config", str(recipe), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["reward"]["precompute_arms"] is True  # the default
    assert cli_main(["grpo", "--config", str(recipe), "--dry-run", "--precompute_arms", "false"]) == 0
    assert json.loads(capsys.readouterr().out)["reward"]["precompute_arms"] is False

    misses = arm_cache_misses(service.url)
    assert cli_main(["grpo", "--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index('{\n  "stage"') :])
    pre = summary["precompute"]
    # only the 4 questions two steps draw (the trainer's seeded order), not all 8
    assert {k: pre[k] for k in ("questions", "generated", "already_cached", "of_dataset")} == {
        "questions": 4,
        "generated": 4,
        "already_cached": 0,
        "of_dataset": 8,
    }
    assert summary["global_step"] == 2 and summary["reward_calls"] >= 2 and summary["reward_wait_s"] > 0
    waits, steps = summary["reward_wait_s_per_step"], summary["step_time_s_per_step"]
    assert len(waits) == len(steps) == 2 and all(0 < w < t for w, t in zip(waits, steps)), (waits, steps)
    # every score request of the two steps found its question's arms in the cache
    assert arm_cache_misses(service.url) == misses


def test_precompute_skipped_when_the_service_has_no_endpoint():
    from tests.support.flaky_server import start_flaky_server
    from trainer.reward_client import RewardClient
    from trainer.stages.grpo import precompute_arms

    with start_flaky_server() as srv, RewardClient(srv.url, max_retries=0) as client:
        result = precompute_arms(client, ["What is 2+3?"])
    assert set(result) == {"skipped"} and "404" in result["skipped"]


@pytest.mark.parametrize("mode", ["correctness", "majority"])
def test_controls_train_without_a_service_and_say_so(mode, tiny_model_dir, tmp_path, monkeypatch, capsys):
    """``reward: correctness|majority``: no service (its URL points nowhere), the mode in every artifact."""
    monkeypatch.chdir(tmp_path)
    write_train(tmp_path / "train.jsonl")
    values = {
        "model_name_or_path": str(tiny_model_dir),
        "quantization": "none",
        "torch_dtype": "float32",
        "dataset": "train.jsonl",
        "split_file": "split.json",
        "max_train_samples": 4,
        "reward_url": "http://127.0.0.1:9",
        "reward": mode,
        "output_dir": "out",
        "lora_r": 4,
        "lora_alpha": 8,
        "num_generations": 2,
        "per_device_train_batch_size": 4,
        "max_completion_length": 8,
        "max_steps": 1,
        "logging_steps": 1,
        "use_vllm": False,
        "report_to": "none",
        "save_strategy": "steps",
        "save_steps": 1,
        "seed": 3,
    }
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()))
    assert cli_main(["grpo", "--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index('{\n  "stage"') :])
    record = {"reward": mode, "label_free": mode == "majority", "service_url": None, "function": mode}
    assert summary["reward"] == record and summary["reward_calls"] == 0 and summary["precompute"] is None
    assert json.loads((tmp_path / "out" / "reward_mode.json").read_text()) == record
    state = json.loads((tmp_path / "out" / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["RewardModeCallback"]["args"] == record
    assert f"rewards/{mode}/mean" in state["log_history"][0]
