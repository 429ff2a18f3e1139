"""Tokenizer, (quantized) base model, LoRA config and adapter loading — CPU-safe.

QLoRA: the base is loaded in 4-bit NF4 (double quantization) or 8-bit through bitsandbytes, LoRA
adapters train on top. On a machine without CUDA everything runs in float32 (bitsandbytes 4-bit
runs on the CPU too); with CUDA the compute dtype is ``torch_dtype`` (bfloat16 by default).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from trainer.configs import LoraArguments, ModelArguments

__all__ = [
    "cuda_available",
    "compute_dtype",
    "device_map",
    "load_tokenizer",
    "quantization_config",
    "load_base_model",
    "lora_config",
    "load_policy",
    "stop_on_end_of_turn",
]

_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def cuda_available() -> bool:
    return torch.cuda.is_available()


def compute_dtype(model_args: ModelArguments) -> torch.dtype:
    """The dtype weights and compute use: float32 without CUDA; else ``torch_dtype``
    ("auto" = bfloat16 where supported, else float16)."""
    if not cuda_available():
        return torch.float32
    if model_args.torch_dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return _DTYPES[model_args.torch_dtype]


def device_map() -> dict[str, Any] | None:
    """Whole model on this process's GPU (``LOCAL_RANK`` under accelerate/torchrun); None on CPU."""
    if not cuda_available():
        return None
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def load_tokenizer(model_args: ModelArguments, *, padding_side: str | None = None) -> Any:
    """The base model's tokenizer, with a pad token (EOS when the model has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer of {model_args.model_name_or_path!r} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    if padding_side is not None:
        tokenizer.padding_side = padding_side
    return tokenizer


def quantization_config(model_args: ModelArguments) -> Any:
    """The ``BitsAndBytesConfig`` for ``quantization`` ("4bit" NF4 / "8bit"), or None for "none"."""
    if model_args.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if model_args.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    dtype = compute_dtype(model_args)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_args.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=model_args.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=dtype if cuda_available() else torch.uint8,
    )


def load_base_model(model_args: ModelArguments, *, for_training: bool) -> Any:
    """The base causal LM, quantized per ``model_args``; in train mode (KV cache off) when
    ``for_training``, else in eval mode."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": compute_dtype(model_args)}
    qconfig = quantization_config(model_args)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
    dmap = device_map()
    if dmap is not None:
        kwargs["device_map"] = dmap
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    model = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)
    stop_on_end_of_turn(model, load_tokenizer(model_args))
    if for_training:
        model.config.use_cache = False
        model.train()
    else:
        model.eval()
    return model


def stop_on_end_of_turn(model: Any, tokenizer: Any) -> None:
    """Make ``model.generation_config`` stop on every id of ``trainer.generation.stop_token_ids``:
    TRL's GRPO generation and ``generate_texts`` then end a chat model's answer at its template's
    end-of-turn token even where that token is not the model's EOS."""
    from trainer.generation import stop_token_ids

    ids = stop_token_ids(model, tokenizer)
    model.generation_config.eos_token_id = ids[0] if len(ids) == 1 else ids


def lora_config(lora_args: LoraArguments) -> Any:
    """The ``peft.LoraConfig`` of a causal-LM LoRA adapter (no bias training)."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora_args.lora_r,
        lora_alpha=lora_args.lora_alpha,
        lora_dropout=lora_args.lora_dropout,
        target_modules=list(lora_args.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _check_adapter_dir(adapter_path: str) -> None:
    path = Path(adapter_path)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"no PEFT adapter at {adapter_path!r} (adapter_config.json missing); "
            "run the stage that writes it first (e.g. `regime-w-train sft`)"
        )


def load_policy(model_args: ModelArguments, *, trainable: bool, adapter_name: str = "default") -> Any:
    """The base model with ``adapter_path`` loaded on it (a ``PeftModel``), or the bare base when
    no adapter is set. ``trainable`` keeps the adapter weights trainable (train mode)."""
    model = load_base_model(model_args, for_training=trainable)
    if model_args.adapter_path is None:
        return model
    from peft import PeftModel

    _check_adapter_dir(model_args.adapter_path)
    policy = PeftModel.from_pretrained(
        model, model_args.adapter_path, adapter_name=adapter_name, is_trainable=trainable
    )
    if trainable:
        policy.train()
    else:
        policy.eval()
    return policy
