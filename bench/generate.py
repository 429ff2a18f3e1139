"""Tokens/s of the ``hf`` arm backend vs plain ``model.generate`` on the same prompts (DESIGN §7).

Target: the backend (our batching, per-row seeded sampling, per-row budgets) reaches >= 90% of what
plain ``model.generate`` does on the same batch. Both sides decode exactly ``--new-tokens`` tokens
per row (EOS ignored), with the same temperature / top_p, on the same model object.

    # CPU, the tiny test model (built locally):
    python3 bench/generate.py --batch-sizes 1,16,64 --new-tokens 32 --out bench_generate_cpu.json
    # a local model:
    python3 bench/generate.py --model PATH --device cuda --dtype bfloat16
    # random weights of the Llama-3-8B shape on a GPU, static KV cache + torch.compile:
    python3 bench/generate.py --random-config llama3-8b --device cuda --dtype bfloat16 --compile

``--random-config`` takes ``llama3-8b`` or ``HIDDEN,LAYERS[,HEADS,KV_HEADS,INTERMEDIATE,VOCAB]``; the
prompts are then tokenized with ``--tokenizer`` (default: the tiny test tokenizer, built locally).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch

from reward_service.generation.base import ArmPrompt
from reward_service.generation.hf import HFBackend, resolve_device, resolve_dtype

PRESETS = {"llama3-8b": (4096, 32, 32, 8, 14336, 128256)}

QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs $100. Betty has only half of the money she needs. "
    "Her parents decided to give her $15 for that purpose, and her grandparents twice as much as her parents. "
    "How much more money does Betty need to buy the wallet?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
]
SYSTEMS = [
    "Solve the problem step by step. End with '#### <answer>'.",
    "Write the equations first, then compute each one. End with '#### <answer>'.",
    "Solve, then substitute your answer back to check it. End with '#### <answer>'.",
    "Explain to a student and double-check each step. End with '#### <answer>'.",
]


def parse_random_config(spec: str) -> tuple[int, int, int, int, int, int]:
    if spec in PRESETS:
        return PRESETS[spec]
    parts = [int(x) for x in spec.split(",")]
    if len(parts) == 2:
        hidden, layers = parts
        heads = max(1, hidden // 128)
        return hidden, layers, heads, max(1, heads // 4), int(hidden * 3.5), 32000
    if len(parts) == 6:
        return tuple(parts)  # type: ignore[return-value]
    raise SystemExit(f"--random-config: expected a preset {sorted(PRESETS)} or 2 or 6 integers, got {spec!r}")


def load(args: argparse.Namespace) -> tuple[Any, Any, str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.random_config:
        tok_path = args.tokenizer or str(_tiny_dir())
        tokenizer = AutoTokenizer.from_pretrained(tok_path)
        hidden, layers, heads, kv, inter, vocab = parse_random_config(args.random_config)
        config = LlamaConfig(
            vocab_size=max(vocab, len(tokenizer)),
            hidden_size=hidden,
            intermediate_size=inter,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            max_position_embeddings=8192,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        torch.manual_seed(0)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(previous)
        name = f"random-llama(h={hidden},L={layers},heads={heads},kv={kv},ffn={inter},vocab={config.vocab_size})"
    else:
        path = args.model or str(_tiny_dir())
        tokenizer = AutoTokenizer.from_pretrained(path)
        kwargs: dict[str, Any] = {"dtype": dtype}
        if device.type != "cpu":
            kwargs["device_map"] = str(device)
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        name = args.model or "tiny-test-llama"
    return model.eval(), tokenizer, name


def _tiny_dir() -> Path:
    from tests.support.tiny_model import build_tiny_model

    return build_tiny_model(Path(tempfile.gettempdir()) / "regime-w-bench-tiny-llama")


def make_prompts(batch: int, args: argparse.Namespace) -> list[ArmPrompt]:
    prompts = []
    for i in range(batch):
        question = f"{QUESTIONS[i % len(QUESTIONS)]} (variant {i})"
        messages = (("system", SYSTEMS[(i // len(QUESTIONS)) % len(SYSTEMS)]), ("user", question))
        prompts.append(ArmPrompt("bench", messages, args.temperature, args.top_p, args.new_tokens, seed=i))
    return prompts


def plain_generate(backend: HFBackend, prompts: list[ArmPrompt], args: argparse.Namespace) -> int:
    """The baseline: one ``model.generate`` on the same left-padded batch, HF's own sampling."""
    encoded = backend.encode_prompts(prompts)
    width = max(len(x) for x in encoded)
    ids = torch.full((len(encoded), width), backend.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(encoded):
        ids[r, width - len(row) :] = torch.tensor(row)
        mask[r, width - len(row) :] = 1
    sample = args.temperature > 0
    kwargs: dict[str, Any] = dict(
        max_new_tokens=args.new_tokens,
        min_new_tokens=args.new_tokens,
        do_sample=sample,
        pad_token_id=backend.pad_id,
        eos_token_id=backend.eos_ids,
    )
    if sample:
        kwargs.update(temperature=args.temperature, top_p=args.top_p, top_k=0)
    if args.compile:
        kwargs["cache_implementation"] = "static"
    with torch.inference_mode():
        out = backend.model.generate(input_ids=ids.to(backend.device), attention_mask=mask.to(backend.device), **kwargs)
    return int((out.shape[1] - width) * out.shape[0])


def timed(fn: Any, device: torch.device) -> tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def run(args: argparse.Namespace) -> dict[str, Any]:
    model, tokenizer, name = load(args)
    results = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        backend = HFBackend(
            name,
            batch_size=batch,
            ignore_eos=True,
            compile=args.compile,
            preloaded=(model, tokenizer),
            generation_engine="hf",  # transformers generate, the path this compares with plain generate
        )
        prompts = make_prompts(batch, args)
        for _ in range(args.warmup):
            backend.generate(prompts)
            plain_generate(backend, prompts, args)
        hf_times, plain_times, hf_tokens, plain_tokens = [], [], 0, 0
        for _ in range(args.repeats):  # interleaved so drift hits both sides alike
            seconds, _ = timed(lambda: backend.generate(prompts), backend.device)  # noqa: B023 - called at once
            hf_times.append(seconds)
            hf_tokens = backend.last_stats.generated_tokens if backend.last_stats else 0
            seconds, plain_tokens = timed(lambda: plain_generate(backend, prompts, args), backend.device)  # noqa: B023
            plain_times.append(seconds)
        hf_s, plain_s = statistics.median(hf_times), statistics.median(plain_times)
        row = {
            "batch_size": batch,
            "new_tokens": args.new_tokens,
            "hf_backend_tokens_per_s": round(hf_tokens / hf_s, 1),
            "plain_generate_tokens_per_s": round(plain_tokens / plain_s, 1),
            "ratio": round((hf_tokens / hf_s) / (plain_tokens / plain_s), 3),
            "hf_backend_s": round(hf_s, 4),
            "plain_generate_s": round(plain_s, 4),
            "hf_tokens": hf_tokens,
            "plain_tokens": plain_tokens,
        }
        print(json.dumps(row), flush=True)
        results.append(row)
    device = backend.device
    return {
        "bench": "generate",
        "model": name,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "dtype": str(model.dtype).removeprefix("torch."),
        "compile": args.compile,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="hf backend vs plain model.generate, tokens/s")
    parser.add_argument("--model", default=None, help="local path or hub id (default: the tiny test model)")
    parser.add_argument("--random-config", default=None, help="llama3-8b | HIDDEN,LAYERS[,HEADS,KV,FFN,VOCAB]")
    parser.add_argument("--tokenizer", default=None, help="tokenizer for --random-config (default: tiny test one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--compile", action="store_true", help="static KV cache (+ torch.compile of the forward on GPU)"
    )
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    if args.model and args.random_config:
        parser.error("--model and --random-config are exclusive")
    if args.threads:
        torch.set_num_threads(args.threads)
    report = run(args)
    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
