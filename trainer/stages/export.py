"""Stage ``export``: merge a LoRA adapter into its base and save a standalone model.

Merging needs the base in full precision, so the base is loaded unquantized (whatever
``quantization`` says: that knob is how the base is loaded for *training*) in ``export_dtype``;
the merged model is saved in that dtype, or re-loaded through bitsandbytes and saved 4-bit/8-bit
when ``export_quantization`` asks for it. Either way ``AutoModelForCausalLM.from_pretrained``
loads the result; the tokenizer is saved beside it. Writes ``output_dir`` (``checkpoints/merged/``).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.configs import QUANTIZATION_CHOICES, ModelArguments

__all__ = ["ARG_CLASSES", "ExportArguments", "plan", "run"]

_EXPORT_DTYPES = ("bfloat16", "float16", "float32")


@dataclass
class ExportArguments:
    """Where and how the merged model is written."""

    output_dir: str = field(
        default="checkpoints/merged", metadata={"help": "Directory of the merged model + tokenizer."}
    )
    export_dtype: str = field(default="bfloat16", metadata={"help": "dtype of the merge and the saved weights."})
    export_quantization: str = field(
        default="none",
        metadata={"help": "'none' (plain weights), '4bit' (NF4) or '8bit' (bitsandbytes)."},
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace output_dir if it already holds a model."}
    )

    def __post_init__(self) -> None:
        if self.export_dtype not in _EXPORT_DTYPES:
            raise ValueError(f"export_dtype must be one of {_EXPORT_DTYPES}, got {self.export_dtype!r}")
        if self.export_quantization not in QUANTIZATION_CHOICES:
            raise ValueError(
                f"export_quantization must be one of {QUANTIZATION_CHOICES}, got {self.export_quantization!r}"
            )


ARG_CLASSES: tuple[type, ...] = (ModelArguments, ExportArguments)


def _check(model_args: ModelArguments, export_args: ExportArguments) -> None:
    if model_args.adapter_path is None:
        raise ValueError("export merges an adapter: set adapter_path (e.g. checkpoints/lora_rl)")
    out = Path(export_args.output_dir)
    if (out / "config.json").exists() and not export_args.overwrite_output_dir:
        raise FileExistsError(f"{out} already holds a model; pass --overwrite_output_dir true to replace it")


def plan(model_args: ModelArguments, export_args: ExportArguments) -> dict[str, Any]:
    """The resolved export plan; loads no weights."""
    _check(model_args, export_args)
    return {
        "base": model_args.model_name_or_path,
        "adapter": model_args.adapter_path,
        "merge": f"base loaded unquantized in {export_args.export_dtype}, adapter merged",
        "export": dataclasses.asdict(export_args),
        "output_dir": export_args.output_dir,
    }


def _merged_model(model_args: ModelArguments, dtype: Any) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.modeling import _check_adapter_dir

    _check_adapter_dir(str(model_args.adapter_path))
    base = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, dtype=dtype)
    merged = PeftModel.from_pretrained(base, model_args.adapter_path).merge_and_unload()
    merged.eval()
    return merged


def _requantize(plain_dir: Path, out: Path, model_args: ModelArguments, quantization: str) -> None:
    """Load the merged weights through bitsandbytes and save the quantized model."""
    from transformers import AutoModelForCausalLM

    from trainer.modeling import device_map, quantization_config

    qargs = dataclasses.replace(model_args, quantization=quantization, adapter_path=None)
    kwargs: dict[str, Any] = {"quantization_config": quantization_config(qargs)}
    if device_map() is not None:
        kwargs["device_map"] = device_map()
    quantized = AutoModelForCausalLM.from_pretrained(str(plain_dir), **kwargs)
    quantized.save_pretrained(str(out))


def run(model_args: ModelArguments, export_args: ExportArguments) -> dict[str, Any]:
    """Merge ``adapter_path`` into the base and save the model + tokenizer to ``output_dir``."""
    import torch

    from trainer.modeling import load_tokenizer

    _check(model_args, export_args)
    dtype = getattr(torch, export_args.export_dtype)
    out = Path(export_args.output_dir)
    if out.exists() and export_args.overwrite_output_dir:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    merged = _merged_model(model_args, dtype)
    if export_args.export_quantization == "none":
        merged.save_pretrained(str(out))
    else:
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            merged.save_pretrained(tmp)
            del merged
            _requantize(Path(tmp), out, model_args, export_args.export_quantization)
    load_tokenizer(model_args).save_pretrained(str(out))
    summary = {
        "model_dir": str(out),
        "base": model_args.model_name_or_path,
        "adapter": model_args.adapter_path,
        "dtype": export_args.export_dtype,
        "quantization": export_args.export_quantization,
    }
    (out / "export_info.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
