"""regime-w-train: --help lists every stage, --dry-run resolves each 8B recipe, flags beat YAML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer import cli
from trainer.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "deepseek-r1-distill-llama-8b"
H4_RECIPES = ("sft", "dpo", "export")


def _dry_run(capsys, *argv: str) -> dict:
    rc = cli.main([*argv, "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


def test_help_lists_every_stage() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for stage in ("sft", "rollouts", "prefs", "dpo", "grpo", "eval", "export"):
        assert stage in STAGES
        assert f"\n  {stage} " in proc.stdout


def test_help_survives_a_stage_module_that_does_not_import(monkeypatch, capsys) -> None:
    monkeypatch.setitem(STAGES, "ghost", "trainer.stages.no_such_stage_module")
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "ghost" in capsys.readouterr().out
    assert cli.main(["ghost", "--dry-run"]) == 2
    assert "stage 'ghost' is not available" in capsys.readouterr().err


def test_unknown_stage_is_an_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["pretrain"])
    assert exc.value.code == 2
    assert "unknown stage 'pretrain'" in capsys.readouterr().err


@pytest.mark.parametrize("stage", H4_RECIPES)
def test_dry_run_of_the_8b_recipe(stage: str, capsys) -> None:
    plan = _dry_run(capsys, stage, "--config", str(RECIPES / f"{stage}.yaml"))
    assert plan["stage"] == stage and plan["dry_run"] is True
    if stage == "export":
        assert plan["base"] == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
        assert plan["adapter"] == "checkpoints/lora_rl"
        assert plan["output_dir"] == "checkpoints/merged"
        return
    model = plan["model"]
    assert model["model_name_or_path"] == "deepseek-ai/DeepSeek-R1-Distill-Llama-8B"
    assert model["quantization"] == "4bit"
    assert model["bnb_4bit_quant_type"] == "nf4" and model["bnb_4bit_use_double_quant"] is True
    training = plan["training"]
    assert training["gradient_checkpointing"] is True
    assert training["max_length"] == 1024
    # bf16 is what the recipe asks for on a GPU; without CUDA it is switched off (float32).
    assert training["bf16"] is plan["cuda_available"]
    if stage == "sft":
        assert plan["lora"] == {
            "lora_r": 64,
            "lora_alpha": 16,
            "lora_dropout": 0.05,
            "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        }
        assert plan["output_dir"] == "checkpoints/lora_sft"
        assert training["completion_only_loss"] is True
        assert plan["data"]["dev_fraction"] == 0.2
    else:
        assert model["adapter_path"] == "checkpoints/lora_sft"
        assert training["beta"] == 0.1
        assert plan["output_dir"] == "checkpoints/lora_rl"


def test_every_recipe_in_the_8b_directory_dry_runs(capsys) -> None:
    recipes = sorted(RECIPES.glob("*.yaml"))
    assert {p.stem for p in recipes} >= set(H4_RECIPES)
    for recipe in recipes:
        assert recipe.stem in STAGES, f"{recipe.name} names no stage"
        plan = _dry_run(capsys, recipe.stem, "--config", str(recipe))
        assert plan["stage"] == recipe.stem


def test_flags_override_the_yaml(capsys) -> None:
    plan = _dry_run(
        capsys,
        "sft",
        "--config",
        str(RECIPES / "sft.yaml"),
        "--learning_rate",
        "1e-5",
        "--lora_r",
        "8",
        "--quantization",
        "8bit",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--output_dir",
        "elsewhere/sft",
    )
    assert plan["training"]["learning_rate"] == 1e-5
    assert plan["lora"]["lora_r"] == 8
    assert plan["lora"]["lora_target_modules"] == ["q_proj", "v_proj"]
    assert plan["model"]["quantization"] == "8bit"
    assert plan["output_dir"] == "elsewhere/sft"
    # Untouched keys still come from the YAML.
    assert plan["training"]["per_device_train_batch_size"] == 8


def test_bad_values_and_unknown_keys_are_reported(tmp_path: Path, capsys) -> None:
    assert cli.main(["sft", "--quantization", "3bit", "--dry-run"]) == 2
    assert "quantization must be one of" in capsys.readouterr().err
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("lora_rank: 8\n")
    assert cli.main(["sft", "--config", str(recipe), "--dry-run"]) == 2
    assert "lora_rank" in capsys.readouterr().err


def test_dry_run_rejects_inconsistent_plans(capsys) -> None:
    assert cli.main(["dpo", "--dry-run"]) == 2
    assert "set adapter_path" in capsys.readouterr().err
    assert cli.main(["sft", "--adapter_path", "checkpoints/lora_sft", "--dry-run"]) == 2
    assert "unset adapter_path" in capsys.readouterr().err


def test_the_8b_sft_recipe_runs_on_a_cpu_without_liger():
    import torch

    from trainer.cli import parse_stage_args

    if torch.cuda.is_available():  # the rule is about CPU-only machines
        return
    from pathlib import Path

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "deepseek-r1-distill-llama-8b" / "sft.yaml"
    *_, sft_args = parse_stage_args("sft", ["--config", str(recipe)])
    assert sft_args.use_liger_kernel is False and sft_args.bf16 is False


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("output_dir: out\nlearning_rate: [1, 2\n", "not valid YAML at line 3"),
        ("- 1\n- 2\n", "a recipe is a YAML mapping of argument names to values, not a list"),
        ("output_dir: out\nno_such_key: 3\n", "unknown key(s) no_such_key: not an argument of stage 'sft'"),
    ],
    ids=["broken_yaml", "not_a_mapping", "unknown_key"],
)
def test_bad_recipe_is_one_line_naming_the_file_and_exit_2(tmp_path: Path, text: str, says: str) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "sft", "--config", str(recipe), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("regime-w-train")]
    assert len(ours) == 1 and ours[0].startswith(f"regime-w-train sft: invalid arguments: {recipe}: {says}"), ours


def test_the_bitsandbytes_hub_kernel_warning_is_not_shown(caplog) -> None:
    """Issue 21: on CPUs with AVX512-BF16 bitsandbytes logs, at import, that the hub kernel package is missing
    (then uses its own CPU code). The CLI drops that one message; other warnings of the logger still show."""
    import logging

    from trainer import cli

    cli._quiet_known_warnings()
    cli._quiet_known_warnings()  # once per process is enough: a second call adds no second filter
    bnb = logging.getLogger(cli.BNB_CPU_LOGGER)
    assert sum(isinstance(f, cli._DropPrefix) for f in bnb.filters) == 1
    with caplog.at_level(logging.WARNING):
        # the call bitsandbytes makes (backends/cpu/ops.py, bitsandbytes 0.50)
        bnb.warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already "
            "`pip install kernels` and the kernels >= 0.11.1",
            ModuleNotFoundError("No module named 'kernels'"),
        )
        bnb.warning("some other bitsandbytes warning")
    messages = [r.getMessage() for r in caplog.records if r.name == cli.BNB_CPU_LOGGER]
    assert messages == ["some other bitsandbytes warning"]
