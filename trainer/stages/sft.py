"""Stage ``sft``: QLoRA supervised fine-tuning on the train part of the GSM8K 80/20 split.

Prompt-completion data (``prompt`` = ``build_prompt(question)``, ``completion`` = the GSM8K
solution without calculator annotations), so the loss is on the completion only. The base is
loaded 4-bit NF4 (or 8-bit, or unquantized) and a LoRA adapter (r=64, alpha=16, q/k/v/o) trains on
it with gradient checkpointing. Writes the adapter + tokenizer to ``output_dir``
(``checkpoints/lora_sft/``) and the split ids to ``split_file``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import SFTConfig

from trainer.configs import DataArguments, LoraArguments, ModelArguments, apply_cpu_precision_rule

__all__ = ["ARG_CLASSES", "SFTStageConfig", "plan", "run", "build_sft_records"]


@dataclass
class SFTStageConfig(SFTConfig):
    """TRL's ``SFTConfig`` with this stage's defaults (adapter dir, completion-only loss)."""

    output_dir: str = field(default="checkpoints/lora_sft", metadata={"help": "Where the SFT adapter + tokenizer go."})
    completion_only_loss: bool | None = field(
        default=True, metadata={"help": "Loss on the completion (the solution) only."}
    )

    def __post_init__(self) -> None:
        apply_cpu_precision_rule(self)
        super().__post_init__()


ARG_CLASSES: tuple[type, ...] = (ModelArguments, LoraArguments, DataArguments, SFTStageConfig)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _plain(value: Any) -> Any:
    """An enum's value (TrainingArguments turns strings into enums), else the value itself."""
    return getattr(value, "value", value)


def _check(model_args: ModelArguments, args: SFTStageConfig) -> None:
    if model_args.adapter_path is not None:
        raise ValueError(
            f"sft trains a fresh LoRA adapter on the base; unset adapter_path (got {model_args.adapter_path!r})"
        )
    if args.completion_only_loss is False:
        raise ValueError("sft trains on the answer only: completion_only_loss must not be false")


def plan(
    model_args: ModelArguments,
    lora_args: LoraArguments,
    data_args: DataArguments,
    args: SFTStageConfig,
) -> dict[str, Any]:
    """The resolved SFT plan; loads no weights and no data."""
    _check(model_args, args)
    return {
        "model": dataclasses.asdict(model_args),
        "lora": dataclasses.asdict(lora_args),
        "data": dataclasses.asdict(data_args),
        "output_dir": args.output_dir,
        "cuda_available": _cuda_available(),
        "training": {
            "learning_rate": args.learning_rate,
            "num_train_epochs": args.num_train_epochs,
            "max_steps": args.max_steps,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "max_length": args.max_length,
            "lr_scheduler_type": _plain(args.lr_scheduler_type),
            "warmup_steps": args.warmup_steps,
            "optim": _plain(args.optim),
            "gradient_checkpointing": args.gradient_checkpointing,
            "bf16": args.bf16,
            "completion_only_loss": args.completion_only_loss,
            "packing": args.packing,
            "padding_free": args.padding_free,
            "use_liger_kernel": args.use_liger_kernel,
            "seed": args.seed,
        },
    }


def build_sft_records(problems: list[Any], tokenizer: Any) -> list[dict[str, str]]:
    """Prompt-completion rows for TRL: the one prompt, and the cleaned GSM8K solution closed with the
    chat template's end-of-turn text (``end_of_turn``; TRL appends the EOS only when that is not it)."""
    from trainer.prompts import build_prompt, completion_separator, end_of_turn, format_target, opens_think

    sep = completion_separator(tokenizer)
    close = end_of_turn(tokenizer)
    records = []
    for p in problems:
        prompt = build_prompt(p.question, tokenizer)
        target = format_target(p.solution, close_think=opens_think(prompt))
        records.append({"prompt": prompt, "completion": sep + target + close})
    return records


def run(
    model_args: ModelArguments,
    lora_args: LoraArguments,
    data_args: DataArguments,
    args: SFTStageConfig,
) -> dict[str, Any]:
    """Train the SFT adapter; returns where it went and what it trained on."""
    from datasets import Dataset
    from trl import SFTTrainer

    from trainer.checkpoints import resume_path
    from trainer.data import load_train_dev
    from trainer.modeling import load_base_model, load_tokenizer, lora_config

    _check(model_args, args)
    tokenizer = load_tokenizer(model_args, padding_side="right")
    train, dev = load_train_dev(data_args)
    train_ds = Dataset.from_list(build_sft_records(train, tokenizer))
    eval_ds = None
    if _plain(args.eval_strategy) != "no":
        eval_ds = Dataset.from_list(build_sft_records(dev, tokenizer))

    model = load_base_model(model_args, for_training=True)
    model.train()
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=lora_config(lora_args),
    )
    result = trainer.train(resume_from_checkpoint=resume_path(args))
    out = Path(args.output_dir)
    trainer.save_model(str(out))  # a PeftModel saves the adapter only
    tokenizer.save_pretrained(str(out))
    split_copy = out / "gsm8k_split.json"
    shutil.copyfile(data_args.split_file, split_copy)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    summary = {
        "adapter_dir": str(out),
        "split_file": data_args.split_file,
        "num_train": len(train),
        "num_dev": len(dev),
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "quantization": model_args.quantization,
    }
    (out / "sft_summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
