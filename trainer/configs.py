"""Argument dataclasses shared by every trainer stage.

They are parsed TrlParser-style (recipe YAML first, explicit CLI flags override) together with a
stage's TRL config (``SFTConfig``, ``DPOConfig``, ...). Field names are unique across the classes a
stage parses, so none of these redefines a TRL field (``seed``, ``output_dir``, ``max_length``, ...).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from trainer.reward_client.settings import (
    API_KEY_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_BATCH_ITEMS,
    DEFAULT_PATIENCE_S,
    DEFAULT_TIMEOUT_S,
    URL_ENV,
)

__all__ = [
    "ModelArguments",
    "LoraArguments",
    "DataArguments",
    "RewardServiceArguments",
    "QUANTIZATION_CHOICES",
    "TORCH_DTYPE_CHOICES",
    "DEFAULT_REWARD_URL",
    "apply_cpu_precision_rule",
]

QUANTIZATION_CHOICES = ("4bit", "8bit", "none")
TORCH_DTYPE_CHOICES = ("bfloat16", "float16", "float32", "auto")
#: ``adapter_path`` values that mean "no adapter, the bare base" (a recipe's adapter overridden on the command line)
NO_ADAPTER = ("", "none", "null")
#: The reward service's default address (the client's ``DEFAULT_BASE_URL``).
DEFAULT_REWARD_URL = DEFAULT_BASE_URL


@dataclass
class ModelArguments:
    """Which base model to load, how to quantize it, and which adapter to put on it."""

    model_name_or_path: str = field(
        default="deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
        metadata={"help": "Hub name or local directory of the base model."},
    )
    adapter_path: str | None = field(
        default=None,
        metadata={
            "help": "A PEFT adapter directory to load on the base (e.g. checkpoints/lora_sft); 'none' for the bare "
            "base (e.g. rollouts of a teacher model: `--adapter_path none` overrides a recipe's adapter)."
        },
    )
    quantization: str = field(
        default="4bit",
        metadata={"help": "Base weights: '4bit' (NF4, QLoRA), '8bit' (LLM.int8) or 'none'."},
    )
    bnb_4bit_quant_type: str = field(default="nf4", metadata={"help": "'nf4' or 'fp4'."})
    bnb_4bit_use_double_quant: bool = field(
        default=True, metadata={"help": "Quantize the 4-bit quantization constants too."}
    )
    torch_dtype: str = field(
        default="bfloat16",
        metadata={"help": "'bfloat16' | 'float16' | 'float32' | 'auto' (float32 is used on CPU)."},
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "e.g. 'sdpa', 'flash_attention_2', 'eager'."}
    )

    def __post_init__(self) -> None:
        if self.adapter_path is not None and self.adapter_path.strip().lower() in NO_ADAPTER:
            self.adapter_path = None
        if self.quantization not in QUANTIZATION_CHOICES:
            raise ValueError(f"quantization must be one of {QUANTIZATION_CHOICES}, got {self.quantization!r}")
        if self.torch_dtype not in TORCH_DTYPE_CHOICES:
            raise ValueError(f"torch_dtype must be one of {TORCH_DTYPE_CHOICES}, got {self.torch_dtype!r}")
        if self.bnb_4bit_quant_type not in ("nf4", "fp4"):
            raise ValueError(f"bnb_4bit_quant_type must be 'nf4' or 'fp4', got {self.bnb_4bit_quant_type!r}")


@dataclass
class LoraArguments:
    """The LoRA adapter trained on top of the (quantized) base."""

    lora_r: int = field(default=64, metadata={"help": "LoRA rank r."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "Module names that get LoRA adapters."},
    )

    def __post_init__(self) -> None:
        if self.lora_r <= 0:
            raise ValueError(f"lora_r must be positive, got {self.lora_r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules:
            raise ValueError("lora_target_modules must name at least one module")


@dataclass
class DataArguments:
    """Where GSM8K (and GSM8K-Platinum) come from, and the seeded train/dev split."""

    dataset: str = field(
        default="openai/gsm8k",
        metadata={"help": "Hub name, or a local GSM8K-format JSONL (question, answer) train file."},
    )
    dataset_config: str = field(default="main", metadata={"help": "Hub dataset config name."})
    test_dataset: str | None = field(
        default=None,
        metadata={"help": "Local test JSONL; when None the hub dataset's 'test' split is used."},
    )
    dev_fraction: float = field(default=0.2, metadata={"help": "Share of the train file held out as the dev set."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the train/dev split."})
    split_file: str = field(
        default="data/gsm8k_split.json",
        metadata={"help": "Saved train/dev ids: every stage sees the same dev set."},
    )
    platinum: str = field(
        default="madrylab/gsm8k-platinum",
        metadata={"help": "Hub name or local JSONL (question, answer, cleaning_status)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Cap on training problems (after the split)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on evaluation problems."})

    def __post_init__(self) -> None:
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive when set, got {value}")


def _default_reward_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_REWARD_URL


@dataclass
class RewardServiceArguments:
    """How to reach the Regime W reward service over HTTP, and which reward scores the samples.

    The defaults are the reward client's (``trainer.reward_client.settings``, where they are explained).
    """

    reward_url: str = field(
        default_factory=_default_reward_url,
        metadata={"help": f"Base URL of the reward service (env {URL_ENV} overrides the default)."},
    )
    reward_api_key_env: str = field(default=API_KEY_ENV, metadata={"help": "Environment variable holding the API key."})
    reward_timeout_s: float = field(
        default=DEFAULT_TIMEOUT_S,
        metadata={
            "help": "Per-request read timeout (s). Keep it at least 30 s above the service's "
            "REGIME_W_GENERATION_TIMEOUT_S (default 90), so the service's 504 + Retry-After arrives first."
        },
    )
    reward_patience_s: float = field(
        default=DEFAULT_PATIENCE_S,
        metadata={
            "help": "How long one request keeps retrying an unavailable service (connection errors, "
            "429, 503 with Retry-After, 504) before the stage stops (s)."
        },
    )
    reward_max_retries: int | None = field(
        default=None, metadata={"help": "Optional cap on retries within reward_patience_s (unset: no cap)."}
    )
    reward_batch_items: int = field(
        default=DEFAULT_BATCH_ITEMS, metadata={"help": "Questions (items) per /v1/score request."}
    )
    reward: str = field(
        default="regime_w",
        metadata={
            "help": "Which reward scores the samples: 'regime_w' (the service), 'correctness' (answer vs gold, "
            "no service) or 'majority' (label-free vote among the policy's samples of a question)."
        },
    )
    label_free: bool = field(
        default=False,
        metadata={"help": "With reward 'regime_w': leave the gold answer out even when the data set has it."},
    )

    def __post_init__(self) -> None:
        if self.reward_timeout_s <= 0:
            raise ValueError(f"reward_timeout_s must be positive, got {self.reward_timeout_s}")
        if self.reward_patience_s < 0:
            raise ValueError(f"reward_patience_s must be >= 0, got {self.reward_patience_s}")
        if self.reward_max_retries is not None and self.reward_max_retries < 0:
            raise ValueError(f"reward_max_retries must be >= 0, got {self.reward_max_retries}")
        if self.reward_batch_items <= 0:
            raise ValueError(f"reward_batch_items must be positive, got {self.reward_batch_items}")
        from trainer.reward_modes import check_reward

        check_reward(self.reward, self.label_free)


def apply_cpu_precision_rule(config: Any) -> None:
    """GPU-only settings only where CUDA is: on a CPU-only machine bf16/fp16 mixed precision is
    switched off (float32 training) and so are Liger's Triton kernels, with a warning when the
    recipe asked for them.

    Call it at the top of a TRL config subclass's ``__post_init__``, before
    ``super().__post_init__()`` (``TrainingArguments`` rejects bf16 on a CPU-only machine).
    """
    import torch

    if torch.cuda.is_available():
        return
    asked = [name for name in ("bf16", "fp16") if getattr(config, name, None)]
    if asked:
        warnings.warn(
            f"{' and '.join(asked)} requested but CUDA is not available: training in float32 on the CPU",
            stacklevel=2,
        )
    config.bf16 = False
    config.fp16 = False
    if getattr(config, "use_liger_kernel", False):
        warnings.warn("use_liger_kernel requested but CUDA is not available: Liger's kernels are off", stacklevel=2)
        config.use_liger_kernel = False
