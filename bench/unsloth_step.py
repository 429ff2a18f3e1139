"""Unsloth's QLoRA SFT step on the shape of ``bench/qlora_step.py`` (issue 15 item 3, issue 26 item 3).

The same bf16 checkpoint (``qlora_step.py build``), the same rows (``batch`` rows of exactly ``seq``
random token ids from ``qlora_step._random_batches``, labels = inputs), the same LoRA (r=64, alpha=16,
dropout 0.05, q/k/v/o), 4-bit NF4 base with double quantization and bf16 compute, gradient
checkpointing, TRL ``SFTTrainer`` with ``paged_adamw_8bit`` at a constant 2e-4, one optimizer step per
batch; measured like ``qlora_step.py`` (median step-end-to-step-end time after ``warmup`` steps, CUDA
synchronized; peak = ``max_memory_allocated`` over the training steps). What differs is Unsloth's own:
``FastLanguageModel.from_pretrained`` / ``get_peft_model`` (its fused kernels and patched attention,
MLP and loss) and its checkpointing (``--gc unsloth``, its default: activations offloaded to the CPU;
``--gc true``: plain checkpointing, as ours).

Unsloth pins transformers <= 5.17 and trl <= 1.15, so it runs from its own ``--target`` site (the GPU
image's transformers 5.17), never beside the trainer's packages:

    PYTHONPATH=/tmp/site-unsloth:. python3 bench/unsloth_step.py one --model M --batch 8 --json-out u.json
    bash bench/gpu_unsloth.sh        # both sides on one GPU machine (docs/performance.md)

``--cpu-smoke`` (no GPU): a 16-bit LoRA on the CPU through the same code, to check the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

# Unsloth must be imported before transformers / trl / peft (it patches them): nothing here imports them
# at module level, and qlora_step.py imports only the standard library at module level.
from bench.qlora_step import LORA, RunSpec, _random_batches, _summary, _sync


def run_unsloth(
    model_dir: str, batch: int, seq: int, warmup: int, steps: int, *, gc: str, dropout: float, cpu: bool
) -> dict[str, Any]:
    import torch
    import unsloth  # noqa: F401  (first: patches transformers, trl, peft)
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            self.ends.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            _sync()
            self.ends.append(time.perf_counter())

    t0 = time.perf_counter()
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=model_dir,
        max_seq_length=seq,
        dtype=torch.float32 if cpu else torch.bfloat16,
        load_in_4bit=not cpu,
        load_in_16bit=cpu,
        use_gradient_checkpointing={"unsloth": "unsloth", "true": True, "false": False}[gc],
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=dropout,
        target_modules=list(LORA["targets"]),
        bias="none",
        use_gradient_checkpointing={"unsloth": "unsloth", "true": True, "false": False}[gc],
        random_state=3407,
    )
    total = warmup + steps
    vocab = model.config.vocab_size
    rows = [r.tolist() for b in _random_batches(total, batch, seq, vocab) for r in b]
    dataset = Dataset.from_dict({"input_ids": rows})  # pre-tokenized: exactly seq tokens a row
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            max_steps=total,
            max_length=seq,
            learning_rate=2e-4,
            lr_scheduler_type="constant",
            optim="adamw_torch" if cpu else "paged_adamw_8bit",
            bf16=not cpu,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            eval_strategy="no",
            seed=42,
            dataloader_drop_last=True,
            disable_tqdm=True,
            packing=False,
            dataset_num_proc=1,
        )
        timer = StepTimer()
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[timer]
        )
        load_s = time.perf_counter() - t0
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    spec = RunSpec(
        name=f"unsloth-{'cpu-' if cpu else ''}gc{gc}-d{dropout:g}-b{batch}",
        path="unsloth",
        batch=batch,
        seq=seq,
        gradient_checkpointing=gc != "false",
        optim=args.optim,
        extra={"unsloth_gradient_checkpointing": gc, "lora_dropout": dropout},
    )
    return _summary(spec, timer.ends, warmup, losses, {"load_s": round(load_s, 1), "trainable_parameters": trainable})


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in (
        "unsloth",
        "unsloth_zoo",
        "torch",
        "transformers",
        "trl",
        "peft",
        "bitsandbytes",
        "triton",
        "xformers",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Unsloth QLoRA SFT step on bench/qlora_step.py's shape")
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("one")
    one.add_argument("--model", required=True, help="a directory written by `qlora_step.py build`")
    one.add_argument("--batch", type=int, default=8)
    one.add_argument("--seq", type=int, default=1024)
    one.add_argument("--warmup", type=int, default=2)
    one.add_argument("--steps", type=int, default=5)
    one.add_argument("--gc", choices=["unsloth", "true", "false"], default="unsloth")
    one.add_argument("--dropout", type=float, default=LORA["dropout"])
    one.add_argument("--cpu-smoke", action="store_true", help="16-bit LoRA on the CPU (no bitsandbytes, no GPU)")
    one.add_argument("--json-out", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.cpu_smoke:
        os.environ.setdefault("UNSLOTH_ALLOW_CPU", "1")
    result = run_unsloth(
        args.model,
        args.batch,
        args.seq,
        args.warmup,
        args.steps,
        gc=args.gc,
        dropout=args.dropout,
        cpu=args.cpu_smoke,
    )
    result["versions"] = versions()
    text = json.dumps(result, indent=2)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
