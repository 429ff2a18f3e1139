"""QLoRA training step: a plain transformers + peft + bitsandbytes loop beside the trainer's SFT path.

Both paths load the same bf16 checkpoint with the same ``BitsAndBytesConfig`` (NF4, double
quantization, bf16 compute and storage), put the same LoRA adapter on it (r=64, alpha=16, dropout
0.05, q/k/v/o) and train on the same shapes: ``batch`` rows of exactly ``seq`` random token ids,
labels = inputs. Each configuration runs in a fresh subprocess so memory does not carry over.

* ``plain``: ``from_pretrained`` + (by default) ``peft.prepare_model_for_kbit_training`` +
  ``get_peft_model``, gradient checkpointing, ``torch.optim.AdamW``, ``model(ids, labels=ids)``.
* ``trainer``: what ``regime-w-train sft`` does: ``trainer.modeling.load_base_model`` +
  ``trainer.stages.sft.SFTStageConfig`` + TRL ``SFTTrainer(peft_config=lora_config(...))``, with
  the knobs given (Liger kernels, padding-free, selective checkpointing, attention, optimizer).

s/step is the median over the timed steps (after ``warmup`` steps) of the time between two step
ends (CUDA synchronized); tokens/s = batch x seq / s_per_step; peak = ``max_memory_allocated``
over the training steps (reset after the model is loaded).

    # once: random weights of the Llama-3-8B shape, saved as bf16 safetensors (+ a small tokenizer)
    python3 bench/qlora_step.py build --out /tmp/llama8b-random
    # one configuration, in this process
    python3 bench/qlora_step.py one --path trainer --model /tmp/llama8b-random --batch 8 --liger
    # the side-by-side suite (each configuration in its own subprocess; resumable)
    python3 bench/qlora_step.py suite --model /tmp/llama8b-random --results-dir /tmp/qlora
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

#: Llama-3-8B: hidden, layers, heads, kv heads, intermediate, vocab.
PRESETS = {
    "llama3-8b": (4096, 32, 32, 8, 14336, 128256),
    "small": (1024, 2, 8, 2, 3584, 128256),  # GPU smoke test
    "tiny": (64, 2, 4, 2, 128, 1024),  # CPU smoke test
}

#: The issue's numbers (H100 80GB, plain transformers 5.17 + peft 0.21 + bitsandbytes 0.50 loop).
ISSUE_BASELINE = {4: (1.153, 3552, 17.05), 8: (2.234, 3667, 25.57), 16: (4.422, 3705, 42.61)}

LORA: dict[str, Any] = {"r": 64, "alpha": 16, "dropout": 0.05, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}


@dataclass
class RunSpec:
    """One configuration to measure."""

    name: str
    path: str  # "plain" | "trainer"
    batch: int
    seq: int = 1024
    attn: str = "sdpa"
    gradient_checkpointing: bool = True
    kbit_prep: bool = True  # plain only: peft.prepare_model_for_kbit_training
    liger: bool = False  # trainer only
    padding_free: bool = False  # trainer only
    selective: bool = False  # trainer only: TRL selective activation checkpointing
    optim: str = "paged_adamw_8bit"  # trainer only (the recipe's)
    chosen_from: str | None = None  # trainer-best-*: the batch-8 configuration it copies
    extra: dict[str, Any] = field(default_factory=dict)


# -- build -------------------------------------------------------------------------------------


def build(out: Path, preset: str) -> dict[str, Any]:
    """Random weights of ``preset``'s shape, bf16 safetensors, plus the tiny test tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.support.tiny_model import build_tiny_model

    if (out / "config.json").exists() and (out / "tokenizer_config.json").exists():
        return {"model": str(out), "built": False}
    hidden, layers, heads, kv, inter, vocab = PRESETS[preset]
    tiny = build_tiny_model(Path(tempfile.gettempdir()) / "regime-w-bench-tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="5GB")
    tokenizer.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    return {"model": str(out), "built": True, "parameters": n}


# -- measuring ---------------------------------------------------------------------------------


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _summary(
    spec: RunSpec, ends: list[float], warmup: int, losses: list[float], extra: dict[str, Any]
) -> dict[str, Any]:
    import torch

    diffs = [b - a for a, b in itertools.pairwise(ends)][warmup:]
    if not diffs:
        raise RuntimeError(f"{spec.name}: no timed steps (ends={len(ends)}, warmup={warmup})")
    s_step = statistics.median(diffs)
    cuda = torch.cuda.is_available()
    return {
        **asdict(spec),
        "s_per_step": round(s_step, 4),
        "s_per_step_all": [round(d, 4) for d in diffs],
        "tokens_per_s": round(spec.batch * spec.seq / s_step, 1),
        "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2) if cuda else None,
        "losses": [round(x, 4) for x in losses],
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
        **extra,
    }


def _random_batches(n: int, batch: int, seq: int, vocab: int, low: int = 10) -> list[Any]:
    import torch

    gen = torch.Generator().manual_seed(1234)
    return [torch.randint(low, vocab, (batch, seq), generator=gen) for _ in range(n)]


def run_plain(spec: RunSpec, model_dir: str, warmup: int, steps: int) -> dict[str, Any]:
    """The plain loop: bitsandbytes NF4 base + peft LoRA + torch AdamW, no Trainer."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if cuda else torch.float32
    qconfig = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=dtype,
        bnb_4bit_quant_storage=dtype if cuda else torch.uint8,
    )
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        quantization_config=qconfig,
        dtype=dtype,
        attn_implementation=spec.attn,
        device_map={"": 0} if cuda else None,
    )
    model.config.use_cache = False
    if spec.kbit_prep:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=spec.gradient_checkpointing)
    elif spec.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model = get_peft_model(
        model,
        LoraConfig(
            r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            target_modules=LORA["targets"],
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    model.train()
    load_s = time.perf_counter() - t0
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    device = next(model.parameters()).device
    batches = [b.to(device) for b in _random_batches(4, spec.batch, spec.seq, model.config.vocab_size)]
    _sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ends, losses = [time.perf_counter()], []
    for step in range(warmup + steps):
        ids = batches[step % len(batches)]
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))  # synchronizes, like the Trainer's per-step logging
        _sync()
        ends.append(time.perf_counter())
    return _summary(
        spec,
        ends,
        warmup,
        losses,
        {
            "load_s": round(load_s, 1),
            "trainable_parameters": sum(p.numel() for p in trainable),
            "optimizer": "torch.optim.AdamW",
        },
    )


def run_trainer(spec: RunSpec, model_dir: str, warmup: int, steps: int) -> dict[str, Any]:
    """The trainer's SFT path: ``load_base_model`` + ``SFTStageConfig`` + TRL ``SFTTrainer``."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTTrainer

    from trainer.configs import LoraArguments, ModelArguments
    from trainer.modeling import load_base_model, load_tokenizer, lora_config
    from trainer.stages.sft import SFTStageConfig

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

    model_args = ModelArguments(
        model_name_or_path=model_dir,
        quantization="4bit",
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        torch_dtype="bfloat16",
        attn_implementation=spec.attn,
    )
    lora_args = LoraArguments(
        lora_r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        lora_target_modules=list(LORA["targets"]),
    )
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model_args, padding_side="right")
    model = load_base_model(model_args, for_training=True)
    model.train()
    total = warmup + steps
    rows = [r.tolist() for b in _random_batches(total, spec.batch, spec.seq, model.config.vocab_size) for r in b]
    dataset = Dataset.from_dict({"input_ids": rows})  # pre-tokenized: exactly seq tokens a row
    gc_kwargs: dict[str, Any] = {"selective": True} if spec.selective else {}
    with tempfile.TemporaryDirectory() as out:
        args = SFTStageConfig(
            output_dir=out,
            per_device_train_batch_size=spec.batch,
            gradient_accumulation_steps=1,
            # padding-free without packing: TRL wants max_length=None (the rows are exactly seq already)
            max_steps=total,
            max_length=None if spec.padding_free else spec.seq,
            learning_rate=2e-4,
            lr_scheduler_type="constant",
            optim=spec.optim,
            gradient_checkpointing=spec.gradient_checkpointing,
            gradient_checkpointing_kwargs=gc_kwargs or None,
            bf16=torch.cuda.is_available(),
            use_liger_kernel=spec.liger,
            padding_free=spec.padding_free,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            eval_strategy="no",
            seed=42,
            dataloader_drop_last=True,
            disable_tqdm=True,
            **spec.extra,
        )
        timer = StepTimer()
        sft = SFTTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(lora_args),
            callbacks=[timer],
        )
        load_s = time.perf_counter() - t0
        sft.train()
        losses = [h["loss"] for h in sft.state.log_history if "loss" in h]
        trainable, _ = sft.model.get_nb_trainable_parameters()
    return _summary(
        spec,
        timer.ends,
        warmup,
        losses,
        {
            "load_s": round(load_s, 1),
            "trainable_parameters": trainable,
            "optimizer": spec.optim,
        },
    )


def run_one(spec: RunSpec, model_dir: str, warmup: int, steps: int) -> dict[str, Any]:
    if spec.path == "plain":
        return run_plain(spec, model_dir, warmup, steps)
    if spec.path == "trainer":
        return run_trainer(spec, model_dir, warmup, steps)
    raise ValueError(f"unknown path {spec.path!r}: 'plain' or 'trainer'")


# -- the suite ---------------------------------------------------------------------------------


def default_specs(seq: int) -> list[RunSpec]:
    """The side-by-side set: the plain loop at 4/8/16, the trainer's levers at 8, then 4/16."""
    return [
        RunSpec("plain-b8", "plain", 8, seq),
        RunSpec("trainer-recipe-b8", "trainer", 8, seq),
        RunSpec("trainer-liger-b8", "trainer", 8, seq, liger=True),
        RunSpec("trainer-liger-pf-b8", "trainer", 8, seq, liger=True, padding_free=True),
        RunSpec("trainer-liger-sac-b8", "trainer", 8, seq, liger=True, selective=True),
        RunSpec("plain-nokbitprep-b8", "plain", 8, seq, kbit_prep=False),
        RunSpec("plain-b4", "plain", 4, seq),
        RunSpec("plain-b16", "plain", 16, seq),
        RunSpec("trainer-best-b4", "trainer", 4, seq),
        RunSpec("trainer-best-b16", "trainer", 16, seq),
        RunSpec("trainer-liger-nogc-b8", "trainer", 8, seq, liger=True, gradient_checkpointing=False),
        RunSpec("trainer-liger-b8-rep", "trainer", 8, seq, liger=True),  # run-to-run spread
    ]


def _best_trainer(results: dict[str, dict[str, Any]]) -> RunSpec | None:
    """The fastest trainer configuration at batch 8 among those that stayed within 0.6x the plain
    loop's peak at batch 8 (the target's memory bound)."""
    plain = results.get("plain-b8")
    candidates = [
        r
        for n, r in results.items()
        if r.get("path") == "trainer" and r.get("batch") == 8 and "error" not in r and "nogc" not in n
    ]
    if plain and "error" not in plain and plain.get("peak_gb"):
        within = [r for r in candidates if r["peak_gb"] <= 0.6 * plain["peak_gb"]]
        candidates = within or candidates
    if not candidates:
        return None
    best = max(candidates, key=lambda r: r["tokens_per_s"])
    keys = set(RunSpec.__dataclass_fields__)
    return RunSpec(**{k: v for k, v in best.items() if k in keys})


def suite(args: argparse.Namespace) -> dict[str, Any]:
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget_s
    specs = default_specs(args.seq)
    only = set(args.only.split(",")) if args.only else None
    results: dict[str, dict[str, Any]] = {}
    for path in results_dir.glob("*.json"):
        if path.name != "summary.json":
            data = json.loads(path.read_text())
            results[data["name"]] = data
    for spec in specs:
        if only and spec.name not in only:
            continue
        if spec.name in results and not (only and "error" in results[spec.name]):
            continue  # done already (a failed run named in --only is retried)
        if spec.name.startswith("trainer-best-"):
            best = _best_trainer(results)
            if best is None:
                continue
            best.chosen_from, best.name, best.batch = best.name, spec.name, spec.batch
            spec = best
        left = deadline - time.monotonic()
        if left < args.min_run_s:
            print(f"[suite] {spec.name}: skipped, {left:.0f} s left of the budget", flush=True)
            continue
        out = results_dir / f"{spec.name}.json"
        cmd = [
            sys.executable,
            __file__,
            "one",
            "--model",
            args.model,
            "--warmup",
            str(args.warmup),
            "--steps",
            str(args.steps),
            "--spec-json",
            json.dumps(asdict(spec)),
            "--json-out",
            str(out),
        ]
        print(f"[suite] {spec.name}: {' '.join(cmd[2:4])} ...", flush=True)
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, timeout=max(30.0, left), capture_output=True, text=True)
            if proc.returncode != 0 or not out.exists():
                tail = (proc.stdout + proc.stderr)[-3000:]
                results[spec.name] = {**asdict(spec), "error": f"exit {proc.returncode}: {tail}"}
                out.write_text(json.dumps(results[spec.name], indent=2) + "\n")
            else:
                results[spec.name] = json.loads(out.read_text())
        except subprocess.TimeoutExpired:
            results[spec.name] = {**asdict(spec), "error": f"timed out after {left:.0f} s"}
            out.write_text(json.dumps(results[spec.name], indent=2) + "\n")
        r = results[spec.name]
        print(
            f"[suite] {spec.name}: {time.monotonic() - started:.0f} s: "
            + (
                r["error"][-800:]
                if "error" in r
                else f"{r['s_per_step']} s/step {r['tokens_per_s']} tok/s {r['peak_gb']} GB"
            ),
            flush=True,
        )
    summary = {
        "bench": "qlora_step",
        "seq": args.seq,
        "warmup": args.warmup,
        "steps": args.steps,
        "issue_baseline": {
            str(b): dict(zip(("s_per_step", "tokens_per_s", "peak_gb"), v)) for b, v in ISSUE_BASELINE.items()
        },
        "results": results,
        "versions": versions(),
    }
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(results))
    return summary


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in (
        "torch",
        "transformers",
        "trl",
        "peft",
        "bitsandbytes",
        "liger-kernel",
        "accelerate",
        "datasets",
        "triton",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| config | batch | s/step | tokens/s | peak GB | issue baseline (s/step, tok/s, GB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        base = ISSUE_BASELINE.get(r.get("batch", 0))
        base_s = f"{base[0]}, {base[1]}, {base[2]}" if base else "-"
        if "error" in r:
            lines.append(f"| {name} | {r.get('batch')} | error | | | {base_s} |")
        else:
            lines.append(
                f"| {name} | {r['batch']} | {r['s_per_step']} | {r['tokens_per_s']} | {r['peak_gb']} | {base_s} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="QLoRA step: plain loop vs the trainer's SFT path")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="save random weights of a preset shape (bf16) + tokenizer")
    p_build.add_argument("--out", required=True)
    p_build.add_argument("--preset", default="llama3-8b", choices=sorted(PRESETS))
    for name in ("one", "suite"):
        p = sub.add_parser(name)
        p.add_argument("--model", required=True, help="a directory written by `build`")
        p.add_argument("--warmup", type=int, default=2)
        p.add_argument("--steps", type=int, default=5)
        p.add_argument("--seq", type=int, default=1024)
    p_one = sub.choices["one"]
    p_one.add_argument("--path", choices=["plain", "trainer"], default="trainer")
    p_one.add_argument("--batch", type=int, default=8)
    p_one.add_argument("--liger", action="store_true")
    p_one.add_argument("--padding-free", action="store_true")
    p_one.add_argument("--selective", action="store_true")
    p_one.add_argument("--no-gc", action="store_true")
    p_one.add_argument("--no-kbit-prep", action="store_true")
    p_one.add_argument("--attn", default="sdpa")
    p_one.add_argument("--optim", default="paged_adamw_8bit")
    p_one.add_argument("--spec-json", default=None, help="a whole RunSpec as JSON (overrides the flags)")
    p_one.add_argument("--json-out", default=None)
    p_suite = sub.choices["suite"]
    p_suite.add_argument("--results-dir", required=True)
    p_suite.add_argument("--budget-s", type=float, default=540.0, help="stop starting runs after this")
    p_suite.add_argument("--min-run-s", type=float, default=75.0, help="skip a run with less time left")
    p_suite.add_argument("--only", default=None, help="comma-separated config names")
    args = parser.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.command == "build":
        print(json.dumps(build(Path(args.out), args.preset)))
    elif args.command == "suite":
        suite(args)
    else:
        if args.spec_json:
            spec = RunSpec(**json.loads(args.spec_json))
        else:
            spec = RunSpec(
                name=f"{args.path}-b{args.batch}",
                path=args.path,
                batch=args.batch,
                seq=args.seq,
                attn=args.attn,
                gradient_checkpointing=not args.no_gc,
                kbit_prep=not args.no_kbit_prep,
                liger=args.liger,
                padding_free=args.padding_free,
                selective=args.selective,
                optim=args.optim,
            )
        result = run_one(spec, args.model, args.warmup, args.steps)
        result["versions"] = versions()
        text = json.dumps(result, indent=2)
        if args.json_out:
            Path(args.json_out).write_text(text + "\n")
        print(text)


if __name__ == "__main__":
    main()
