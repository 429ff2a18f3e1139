"""Tokens/s of the fastgen engine against today's transformers paths, on random weights.

Builds a random-weight Llama of the chosen shape directly on the device (``llama3-8b``: Llama-3-8B,
8.03 B parameters, vocab 128,256, Llama-3 RoPE scaling; ``tiny`` for a CPU smoke run), then times,
in one process on the same model object:

* ``hf-dynamic``: ``model.generate`` with the per-row sampler (``fastgen.LogitsSampler``, what
  ``trainer.generation.generate_texts`` runs for ``generation_engine: hf``), dynamic KV cache, bf16;
* ``hf-static``: the same with ``cache_implementation="static"`` (transformers compiles the forward:
  what GRPO's ``grpo_policy_copy: merged_bf16`` (``trainer.generation.policy_copy``) and the service's
  ``--compile`` do);
* ``fast``: :class:`fastgen.Engine` (static cache, CUDA-graph decode, seeded sampling, refill).

Prompts are random token ids of ``--prompt`` tokens; no stop ids, so every row decodes its whole
budget (a random model would rarely stop anyway). Every configuration runs once untimed (capture,
compilation) and once timed (synchronised wall clock). Also checks the engine against transformers
greedy decoding and graph replay against eager decoding on the same inputs. JSON to ``--out``.

    python bench/generate_engine.py --preset llama3-8b --out bench/results/generate_engine_8b.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

#: hidden, layers, heads, kv heads, intermediate, vocab
PRESETS = {"llama3-8b": (4096, 32, 32, 8, 14336, 128256), "tiny": (64, 2, 4, 2, 128, 512)}


def build_model(preset: str, device: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, heads, kv, inter, vocab = PRESETS[preset]
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16 if device == "cuda" else torch.float32)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def prompts(n: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n, length), generator=g).tolist()


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _peak_reset() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb() -> float:
    return torch.cuda.max_memory_allocated() / 1e9 if torch.cuda.is_available() else 0.0


def run_hf(model: Any, batch: list[list[int]], new: int, temperature: float, static: bool) -> list[list[int]]:
    from transformers import GenerationConfig, LogitsProcessorList

    from fastgen import LogitsSampler
    from trainer.generation import SamplingSpec

    device = next(model.parameters()).device
    ids = torch.tensor(batch, device=device)
    specs = [
        SamplingSpec(temperature=temperature, top_p=0.95 if temperature else 1.0, seed=i) for i in range(len(batch))
    ]
    config = GenerationConfig(
        max_new_tokens=new,
        min_new_tokens=new,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
        cache_implementation="static" if static else None,
    )
    with torch.inference_mode():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            generation_config=config,
            logits_processor=LogitsProcessorList([LogitsSampler.from_specs(specs)]),
        )
    return list(out[:, ids.shape[1] :].tolist())


def run_fast(engine: Any, batch: list[list[int]], new: int, temperature: float) -> list[list[int]]:
    from fastgen import Request

    reqs = [
        Request(p, new, temperature=temperature, top_p=0.95 if temperature else 1.0, seed=i)
        for i, p in enumerate(batch)
    ]
    return [c.token_ids for c in engine.generate(reqs)]


def timed(fn: Any, rows: int, new: int) -> dict[str, float]:
    _peak_reset()
    t0 = time.perf_counter()
    fn()
    _sync()
    first = time.perf_counter() - t0
    _peak_reset()
    t0 = time.perf_counter()
    out = fn()
    _sync()
    seconds = time.perf_counter() - t0
    tokens = sum(len(r) for r in out)
    assert tokens == rows * new, f"expected {rows * new} tokens, got {tokens}"
    return {
        "first_call_s": round(first, 3),
        "seconds": round(seconds, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "ms_per_step": round(1000 * seconds / new, 2),
        "peak_gb": round(_peak_gb(), 2),
    }


def checks(model: Any, vocab: int, device: str) -> dict[str, Any]:
    """Engine greedy vs transformers greedy, and graph replay vs eager, on the same inputs."""
    from fastgen import Engine, EngineConfig, Request

    batch = prompts(4, 64, vocab, seed=1)
    new = 32
    engine = Engine(model, EngineConfig(slots=4))
    fast = run_fast(engine, batch, new, 0.0)
    ref = run_hf(model, batch, new, 0.0, static=False)
    agree = [
        next((k for k, (a, b) in enumerate(zip(f, r, strict=True)) if a != b), new)
        for f, r in zip(fast, ref, strict=True)
    ]
    reqs = [Request(p, new, temperature=0.6, top_p=0.95, seed=i) for i, p in enumerate(batch)]
    graphs = [c.token_ids for c in engine.generate(reqs)]
    eager = [c.token_ids for c in Engine(model, EngineConfig(slots=4, cuda_graphs=False)).generate(reqs)]
    alone = Engine(model, EngineConfig(slots=1)).generate(reqs[2:3])[0].token_ids
    return {
        "greedy_tokens_matching_transformers_before_first_difference": agree,
        "sampled_graph_equals_eager": graphs == eager,
        "sampled_row_alone_equals_in_batch": alone == graphs[2],
        "device": device,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default="llama3-8b")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--batches", default="8,32,64,128", help="engine batch sizes at --new tokens")
    ap.add_argument("--new", type=int, default=256)
    ap.add_argument("--long-new", type=int, default=1024, help="also batch 64 at this many new tokens (0: skip)")
    ap.add_argument("--baselines", default="hf-dynamic,hf-static", help="at batch 64, --new tokens")
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import transformers

    from fastgen import Engine, EngineConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result: dict[str, Any] = {
        "preset": args.preset,
        "prompt_tokens": args.prompt,
        "temperature": args.temperature,
        "top_p": 0.95,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else "none",
        "rows": [],
    }
    t0 = time.perf_counter()
    model = build_model(args.preset, device)
    result["build_s"] = round(time.perf_counter() - t0, 1)
    result["parameters"] = sum(p.numel() for p in model.parameters())
    vocab = PRESETS[args.preset][5]

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    def add(row: dict[str, Any]) -> None:
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        save()

    result["checks"] = checks(model, vocab, device)
    print(json.dumps(result["checks"]), flush=True)
    save()

    shapes = [(int(b), args.new, args.temperature) for b in args.batches.split(",") if b]
    if args.long_new:
        shapes.append((64, args.long_new, args.temperature))
    shapes.append((64, args.new, 0.0))
    for rows, new, temp in shapes:
        batch = prompts(rows, args.prompt, vocab)
        engine = Engine(model, EngineConfig(slots=rows))
        row = {"path": "fast", "batch": rows, "new_tokens": new, "temperature": temp}
        row.update(timed(lambda e=engine, b=batch, n=new, t=temp: run_fast(e, b, n, t), rows, new))
        row["graphs_captured"] = engine.graphs_captured
        engine.release()
        del engine
        add(row)
    batch = prompts(64, args.prompt, vocab)
    for name in [b for b in args.baselines.split(",") if b]:
        static = name == "hf-static"
        row = {"path": name, "batch": 64, "new_tokens": args.new, "temperature": args.temperature}
        row.update(timed(lambda s=static: run_hf(model, batch, args.new, args.temperature, s), 64, args.new))
        add(row)
    print(f"{'path':<11} {'batch':>5} {'new':>5} {'temp':>4} {'tok/s':>9} {'ms/step':>8} {'first s':>8} {'peak GB':>8}")
    for r in result["rows"]:
        print(
            f"{r['path']:<11} {r['batch']:>5} {r['new_tokens']:>5} {r['temperature']:>4} {r['tokens_per_s']:>9}"
            f" {r['ms_per_step']:>8} {r['first_call_s']:>8} {r['peak_gb']:>8}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
