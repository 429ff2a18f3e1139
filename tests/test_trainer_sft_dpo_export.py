"""sft -> dpo -> export on the tiny model, on the CPU, through the real CLI (a few steps each)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer import cli
from trainer.configs import LoraArguments, ModelArguments
from trainer.modeling import load_policy, lora_config, quantization_config

GSM8K_LINES = [
    (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
        "May. How many clips did Natalia sell altogether in April and May?",
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
        "altogether in April and May.\n#### 72",
    ),
    (
        "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
        "How much did she earn?",
        "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
        "$<<0.2*50=10>>10.\n#### 10",
    ),
    (
        "James writes a 3-page letter to 2 different friends twice a week.  How many pages does he write a year?",
        "He writes each friend 3*2=<<3*2=6>>6 pages a week\nSo he writes 6*2=<<6*2=12>>12 pages every "
        "week\nThat means he writes 12*52=<<12*52=624>>624 pages a year\n#### 624",
    ),
    (
        "Albert buys 2 large pizzas and 2 small pizzas. A large pizza has 16 slices and a small pizza "
        "has 8 slices. If he eats it all, how many pieces does he eat that day?",
        "He eats 2 x 16 = <<2*16=32>>32 from the large pizzas\nHe eats 2 x 8 = <<2*8=16>>16 from the "
        "small pizzas\nHe eats 32 + 16 = <<32+16=48>>48 pieces\n#### 48",
    ),
    (
        "Tina makes $18.00 an hour. If she works 8 hours a day for 5 days, how much money does she make?",
        "She makes 8*18 = $<<8*18=144>>144 a day\nIn 5 days she makes 144*5 = $<<144*5=720>>720\n#### 720",
    ),
]
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
TINY_TRAINING = [
    "--max_steps",
    "2",
    "--per_device_train_batch_size",
    "2",
    "--gradient_accumulation_steps",
    "1",
    "--max_length",
    "192",
    "--logging_steps",
    "1",
    "--save_strategy",
    "no",
    "--report_to",
    "none",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pipeline")
    rows = [{"question": q, "answer": a} for q, a in GSM8K_LINES] * 2
    with (work / "train.jsonl").open("w") as fh:
        for i, row in enumerate(rows):
            fh.write(json.dumps({**row, "question": f"{row['question']} (v{i})"}) + "\n")
    prefs = [
        {
            "question": q,
            "better": a.replace("<<", "[").replace(">>", "]"),
            "worse": "I am not sure. Maybe 3.\n#### 3",
            "better_reward": 1.4,
            "worse_reward": -0.1,
        }
        for q, a in GSM8K_LINES[:4]
    ]
    (work / "preferences.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prefs))
    return work


@pytest.fixture(scope="module")
def sft_dir(workdir: Path, tiny_model_dir: Path) -> Path:
    out = workdir / "lora_sft"
    rc = cli.main(
        [
            "sft",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--dataset",
            str(workdir / "train.jsonl"),
            "--split_file",
            str(workdir / "split.json"),
            "--output_dir",
            str(out),
            "--lora_r",
            "8",
            "--lora_alpha",
            "16",
            "--learning_rate",
            "2e-2",
            *TINY_TRAINING,
        ]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def dpo_dir(workdir: Path, tiny_model_dir: Path, sft_dir: Path) -> Path:
    out = workdir / "lora_rl"
    rc = cli.main(
        [
            "dpo",
            "--model_name_or_path",
            str(tiny_model_dir),
            "--adapter_path",
            str(sft_dir),
            "--preferences_file",
            str(workdir / "preferences.jsonl"),
            "--output_dir",
            str(out),
            "--learning_rate",
            "5e-3",
            *TINY_TRAINING,
        ]
    )
    assert rc == 0
    return out


def test_sft_saves_a_lora_adapter_on_q_k_v_o_and_the_split(sft_dir: Path, workdir: Path, tiny_model_dir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((sft_dir / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16
    assert sorted(config["target_modules"]) == sorted(PROJECTIONS)
    weights = load_file(str(sft_dir / "adapter_model.safetensors"))
    for proj in PROJECTIONS:
        assert any(f"{proj}.lora_A" in k for k in weights), proj
        assert any(f"{proj}.lora_B" in k for k in weights), proj
    # Adapter only: no base weights were saved.
    assert not (sft_dir / "model.safetensors").exists()
    assert all("lora_" in k for k in weights)
    # LoRA B starts at zero: after training it is not, so the adapter learned something.
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)
    assert (sft_dir / "tokenizer.json").exists()

    split = json.loads((workdir / "split.json").read_text())
    assert len(split["train_ids"]) == 8 and len(split["dev_ids"]) == 2
    assert json.loads((sft_dir / "gsm8k_split.json").read_text()) == split
    summary = json.loads((sft_dir / "sft_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["num_train"] == 8

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, str(sft_dir))
    lora_modules = [n for n, _ in model.named_modules() if n.endswith("lora_A")]
    assert {n.split(".")[-2] for n in lora_modules} == set(PROJECTIONS)


def test_dpo_trains_the_sft_adapter_and_saves_only_the_policy(sft_dir: Path, dpo_dir: Path) -> None:
    sft = load_file(str(sft_dir / "adapter_model.safetensors"))
    dpo = load_file(str(dpo_dir / "adapter_model.safetensors"))
    assert sft.keys() == dpo.keys()
    assert any(not torch.equal(sft[k].float(), dpo[k].float()) for k in sft)
    assert not (dpo_dir / "ref").exists()
    summary = json.loads((dpo_dir / "dpo_summary.json").read_text())
    assert summary["num_pairs"] == 4 and summary["beta"] == 0.1
    assert summary["rewards"] == ["unrecorded"]  # hand-made pairs name no reward
    assert summary["global_step"] == 2
    # The reference is the frozen SFT adapter, so the first step's loss is exactly ln 2.
    assert summary["first_logged_loss"] == pytest.approx(math.log(2), abs=1e-4)


def test_policy_loads_the_adapter_trainable_or_frozen(tiny_model_dir: Path, sft_dir: Path) -> None:
    args = ModelArguments(model_name_or_path=str(tiny_model_dir), adapter_path=str(sft_dir))
    frozen = load_policy(args, trainable=False)
    assert not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())
    trainable = load_policy(args, trainable=True)
    names = [n for n, p in trainable.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    missing = ModelArguments(model_name_or_path=str(tiny_model_dir), adapter_path=str(sft_dir / "nope"))
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_policy(missing, trainable=False)


def test_export_merges_into_a_loadable_model_that_generates(workdir: Path, tiny_model_dir: Path, dpo_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = workdir / "merged"
    assert (
        cli.main(
            [
                "export",
                "--model_name_or_path",
                str(tiny_model_dir),
                "--adapter_path",
                str(dpo_dir),
                "--output_dir",
                str(out),
            ]
        )
        == 0
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.dtype == torch.bfloat16
    assert not any("lora" in n for n, _ in model.named_parameters())
    ids = tokenizer("Question: What is 6 times 7?\nAnswer:", return_tensors="pt")
    generated = model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert generated.shape[1] == ids["input_ids"].shape[1] + 6
    # The merge changed the weights: the adapter's delta is in them.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    q_merged = model.model.layers[0].self_attn.q_proj.weight
    q_base = base.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_merged, q_base)
    # Refuses to overwrite unless asked.
    assert (
        cli.main(
            [
                "export",
                "--model_name_or_path",
                str(tiny_model_dir),
                "--adapter_path",
                str(dpo_dir),
                "--output_dir",
                str(out),
            ]
        )
        == 2
    )


def test_export_can_save_a_4bit_model(workdir: Path, tiny_model_dir: Path, dpo_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    out = workdir / "merged-4bit"
    assert (
        cli.main(
            [
                "export",
                "--model_name_or_path",
                str(tiny_model_dir),
                "--adapter_path",
                str(dpo_dir),
                "--output_dir",
                str(out),
                "--export_quantization",
                "4bit",
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["load_in_4bit"] is True
    assert config["quantization_config"]["bnb_4bit_quant_type"] == "nf4"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    ids = torch.tensor([[1, 20, 30]])
    assert model.generate(input_ids=ids, max_new_tokens=3, do_sample=False).shape == (1, 6)


def test_quantization_and_lora_configs() -> None:
    nf4 = quantization_config(ModelArguments())
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_use_double_quant
    if not torch.cuda.is_available():
        assert nf4.bnb_4bit_compute_dtype == torch.float32
    assert quantization_config(ModelArguments(quantization="8bit")).load_in_8bit
    assert quantization_config(ModelArguments(quantization="none")) is None
    lora = lora_config(LoraArguments())
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (64, 16, 0.05)
    assert set(lora.target_modules) == set(PROJECTIONS)
    assert lora.task_type == "CAUSAL_LM"
