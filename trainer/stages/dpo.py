"""Stage ``dpo``: DPO of the SFT adapter on the preference pairs of ``data/preferences.jsonl``.

Policy = the SFT adapter, trainable; reference = the same SFT adapter, frozen, on the SAME
quantized base (one base in memory): the adapter is loaded as ``default`` (trainable) and TRL's
``DPOTrainer`` adds a frozen copy named ``ref`` that it switches to for the reference log-probs.
(TRL 1.16 has no ``model_adapter_name``/``ref_adapter_name`` any more; this is its two-adapter
form. ``ref_model=None`` with adapters *disabled* would make the reference the bare base, which
is not the SFT policy.) Rows map to ``prompt`` = ``build_prompt(question)``, ``chosen`` =
``better``, ``rejected`` = ``worse``. Writes the trained adapter + tokenizer to ``output_dir``
(``checkpoints/lora_rl/``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import DPOConfig

from trainer.configs import ModelArguments, apply_cpu_precision_rule
from trainer.records import PreferenceRecord

__all__ = [
    "ARG_CLASSES",
    "PreferenceArguments",
    "DPOStageConfig",
    "REF_ADAPTER",
    "POLICY_ADAPTER",
    "load_preferences",
    "plan",
    "run",
]

POLICY_ADAPTER = "default"
REF_ADAPTER = "ref"  # the name TRL's DPOTrainer gives the frozen copy of the policy adapter


@dataclass
class PreferenceArguments:
    """The preference pairs DPO trains on (written by the ``prefs`` stage)."""

    preferences_file: str = field(
        default="data/preferences.jsonl",
        metadata={"help": "JSONL of trainer.records.PreferenceRecord (written by the prefs stage)."},
    )
    max_pairs: int | None = field(default=None, metadata={"help": "Use only the first N pairs."})

    def __post_init__(self) -> None:
        if self.max_pairs is not None and self.max_pairs <= 0:
            raise ValueError(f"max_pairs must be positive when set, got {self.max_pairs}")


@dataclass
class DPOStageConfig(DPOConfig):
    """TRL's ``DPOConfig`` with this stage's defaults (output dir, beta 0.1)."""

    output_dir: str = field(default="checkpoints/lora_rl", metadata={"help": "Where the DPO adapter + tokenizer go."})
    beta: float = field(default=0.1, metadata={"help": "DPO beta (strength of the KL anchor)."})

    def __post_init__(self) -> None:
        apply_cpu_precision_rule(self)
        super().__post_init__()


ARG_CLASSES: tuple[type, ...] = (ModelArguments, PreferenceArguments, DPOStageConfig)


def _check(model_args: ModelArguments, args: DPOStageConfig) -> None:
    if model_args.adapter_path is None:
        raise ValueError("dpo starts from the SFT adapter: set adapter_path (e.g. checkpoints/lora_sft)")
    if args.sync_ref_model:
        raise ValueError("dpo keeps the SFT reference frozen: sync_ref_model must be false")


def plan(model_args: ModelArguments, pref_args: PreferenceArguments, args: DPOStageConfig) -> dict[str, Any]:
    """The resolved DPO plan; loads no weights and no data."""
    import torch

    _check(model_args, args)
    return {
        "model": dataclasses.asdict(model_args),
        "policy": f"adapter {model_args.adapter_path} (trainable, as {POLICY_ADAPTER!r})",
        "reference": f"adapter {model_args.adapter_path} (frozen copy {REF_ADAPTER!r}, same base)",
        "data": dataclasses.asdict(pref_args),
        "output_dir": args.output_dir,
        "cuda_available": torch.cuda.is_available(),
        "training": {
            "beta": args.beta,
            "loss_type": list(args.loss_type),
            "learning_rate": args.learning_rate,
            "num_train_epochs": args.num_train_epochs,
            "max_steps": args.max_steps,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "max_length": args.max_length,
            "gradient_checkpointing": args.gradient_checkpointing,
            "bf16": args.bf16,
            "padding_free": args.padding_free,
            "use_liger_kernel": args.use_liger_kernel,
            "seed": args.seed,
        },
    }


def load_preferences(path: str, *, max_pairs: int | None = None) -> list[PreferenceRecord]:
    """The pairs of a preferences JSONL (``trainer.records.PreferenceRecord``, as ``prefs`` wrote them)."""
    from itertools import islice

    from trainer.jsonl import read_records

    if not Path(path).is_file():
        raise FileNotFoundError(f"preferences file not found: {path} (run `regime-w-train prefs` first)")
    rows = list(islice(read_records(path, PreferenceRecord), max_pairs))
    if not rows:
        raise ValueError(f"no preference pairs in {path}")
    return rows


def build_dpo_records(rows: list[PreferenceRecord], tokenizer: Any) -> list[dict[str, str]]:
    """prompt/chosen/rejected rows with the one prompt of ``trainer.prompts``."""
    from trainer.prompts import build_prompt, completion_separator

    sep = completion_separator(tokenizer)
    return [
        {
            "prompt": build_prompt(row.question, tokenizer),
            "chosen": sep + row.better,
            "rejected": sep + row.worse,
        }
        for row in rows
    ]


def run(model_args: ModelArguments, pref_args: PreferenceArguments, args: DPOStageConfig) -> dict[str, Any]:
    """Train the policy adapter with DPO against the frozen SFT adapter; save it."""
    from datasets import Dataset
    from trl import DPOTrainer

    from trainer.checkpoints import resume_path
    from trainer.modeling import load_policy, load_tokenizer

    _check(model_args, args)
    rows = load_preferences(pref_args.preferences_file, max_pairs=pref_args.max_pairs)
    tokenizer = load_tokenizer(model_args)
    dataset = Dataset.from_list(build_dpo_records(rows, tokenizer))

    policy = load_policy(model_args, trainable=True, adapter_name=POLICY_ADAPTER)
    trainer = DPOTrainer(model=policy, ref_model=None, args=args, train_dataset=dataset, processing_class=tokenizer)
    peft_model = trainer.model
    adapters = set(getattr(peft_model, "peft_config", {}))
    if REF_ADAPTER not in adapters:
        raise RuntimeError(
            f"DPOTrainer did not create the frozen reference adapter {REF_ADAPTER!r} "
            f"(adapters: {sorted(adapters)}); this TRL version is not supported by the dpo stage"
        )
    result = trainer.train(resume_from_checkpoint=resume_path(args))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainer.accelerator.unwrap_model(peft_model).save_pretrained(str(out), selected_adapters=[POLICY_ADAPTER])
    tokenizer.save_pretrained(str(out))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    summary = {
        "adapter_dir": str(out),
        "init_adapter": model_args.adapter_path,
        # ln 2 = 0.693 when the policy starts equal to the reference (as it must: both are SFT).
        "first_logged_loss": losses[0] if losses else None,
        "num_pairs": len(rows),
        "rewards": sorted({row.reward_name for row in rows}),  # which reward(s) made the pairs
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "beta": args.beta,
    }
    (out / "dpo_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
