"""Helpers of ``bench/gpu_stages.sh``: build the random 8B checkpoint, cap the arms, summarize.

    python3 bench/gpu_stages.py build --tokenizer .gpu/tokenizer-r1 --out /tmp/llama8b-r1 [--preset tiny]
    python3 bench/gpu_stages.py arms-config --max-tokens 256 --out /tmp/arms.toml
    python3 bench/gpu_stages.py summarize --dir METRICS_DIR --out stages.json

``build`` writes random bf16 weights of the Llama-3-8B shape (DeepSeek-R1-Distill-Llama-8B's: hidden
4096, 32 layers, 32 heads, 8 KV heads, intermediate 14336, vocab 128256, rope theta 500000) with the
R1-like tokenizer made by ``bench/gpu_prepare.py``. ``arms-config`` writes a copy of the service's
packaged scorer config with every arm's ``max_tokens`` capped (the copy stays on the machine that
runs the service). ``summarize`` turns the per-stage metrics of ``bench/stage_probe.py`` into the
table of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: hidden, layers, heads, kv heads, intermediate
PRESETS = {"llama3-8b": (4096, 32, 32, 8, 14336), "tiny": (64, 2, 4, 2, 128)}
STAGE_ORDER = ("sft", "rollouts", "rollouts_cached", "rollouts_seq", "prefs", "dpo", "grpo", "eval", "export")


def build(out: Path, tokenizer_dir: Path, preset: str) -> dict[str, Any]:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    if (out / "config.json").exists() and (out / "tokenizer_config.json").exists():
        return {"model": str(out), "built": False}
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    hidden, layers, heads, kv, inter = PRESETS[preset]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
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
    # R1-distill's generation config: sampling defaults, EOS; no pad (pad = EOS comes from the tokenizer)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, max_shard_size="5GB")
    tokenizer.save_pretrained(out)
    return {"model": str(out), "built": True, "parameters": sum(p.numel() for p in model.parameters())}


def arms_config(out: Path, max_tokens: int) -> dict[str, Any]:
    """The packaged scorer config with ``max_tokens = min(N, max_tokens)`` for every arm."""
    from importlib.resources import files

    text = files("reward_service.regime_w").joinpath("default_config.toml").read_text(encoding="utf-8")
    capped = 0

    def cap(m: re.Match[str]) -> str:
        nonlocal capped
        capped += 1
        return f"{m.group(1)}{min(int(m.group(2)), max_tokens)}"

    text = re.sub(r"(?m)^(max_tokens\s*=\s*)(\d+)", cap, text)
    out.write_text(text, encoding="utf-8")
    return {"arms_capped": capped, "max_tokens": max_tokens}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _timed_steps(m: dict[str, Any]) -> list[float]:
    """Step times without the first (warm-up: kernel compilation, autotuning, allocator growth)."""
    steps = list(m.get("step_s") or [])
    return steps[1:] if len(steps) > 1 else steps


def summarize_stage(m: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "stage": m.get("stage"),
        "rc": m.get("rc"),
        "wall_s": round(m.get("wall_s", 0.0), 1),
        "peak_process_gb": round(m.get("peak_process_gb", 0.0), 2),
        "torch_max_allocated_gb": round(m.get("torch_max_allocated_gb", 0.0), 2),
        "torch_max_reserved_gb": round(m.get("torch_max_reserved_gb", 0.0), 2),
        "command": " ".join(m.get("argv", [])),
    }
    if m.get("error"):
        row["error"] = m["error"]
    if "train_begin" in m:
        row["load_s"] = round(m["train_begin"], 1)
    steps = _timed_steps(m)
    if m.get("step_s"):
        row["steps"] = len(m["step_s"])
        row["first_step_s"] = round(m["step_s"][0], 3)
        row["s_per_step"] = round(_median(steps) or 0.0, 3)
        # fastest step: the steady state when compilation (GRPO's static-cache decode) or autotuning hit some steps
        row["fastest_step_s"] = round(min(m["step_s"]), 3)
    logs = [entry for entry in m.get("logs", []) if "loss" in entry or "reward" in entry]
    stage = m.get("stage")
    if stage == "sft" and logs and steps:
        tokens = [entry.get("num_tokens") for entry in logs if entry.get("num_tokens") is not None]
        if len(tokens) >= 2:
            per_step = (tokens[-1] - tokens[0]) / (len(tokens) - 1)
            row["tokens_per_step"] = round(per_step)
            row["tokens_per_s"] = round(per_step / row["s_per_step"])
    if stage == "grpo" and logs and steps:
        lengths = [entry.get("completions/mean_length") for entry in logs[1:] or logs]
        lengths = [x for x in lengths if x is not None]
        if lengths:
            row["completion_mean_length"] = round(statistics.mean(lengths), 1)
        gen = [entry.get("step_time") for entry in logs]
        row["trl_step_time_s"] = [round(x, 3) for x in gen if x is not None]
    if stage == "dpo" and steps:
        row["note"] = "pairs per step = per_device_train_batch_size x gradient_accumulation_steps"
    calls = m.get("generate_calls") or []
    if calls:
        seconds = sum(c["seconds"] for c in calls)
        rows = sum(c["rows"] for c in calls)
        tokens = sum(c["tokens"] for c in calls)
        row.update(
            generate_s=round(seconds, 1),
            completions=rows,
            generated_tokens=tokens,
            s_per_100_completions=round(100 * seconds / rows, 1) if rows else None,
            gen_tokens_per_s=round(tokens / seconds, 1) if seconds else None,
            finished_with_eos=sum(c["finished"] for c in calls),
        )
    if m.get("score_calls_s"):
        row["score_s"] = round(sum(m["score_calls_s"]), 1)
    run_info = m.get("run_info") or {}
    timing = (run_info.get("summary") or {}).get("timing")
    if timing:  # the rollouts stage's own clock (issue 26): its loop, generating, blocked on scoring
        row["rollouts_timing"] = timing
        if timing.get("generation_s"):
            row["loop_over_generation"] = round(timing["loop_s"] / timing["generation_s"], 3)
        row["arms_precompute"] = (run_info.get("summary") or {}).get("arms_precompute")
    return row


def summarize(metrics_dir: Path) -> dict[str, Any]:
    rows = []
    for stage in STAGE_ORDER:
        path = metrics_dir / f"{stage}.json"
        if path.is_file():
            m = json.loads(path.read_text(encoding="utf-8"))
            run_info = metrics_dir / f"{stage}_run.json"
            if run_info.is_file():
                m["run_info"] = json.loads(run_info.read_text(encoding="utf-8"))
            row = summarize_stage(m)
            row["name"] = stage
            rows.append(row)
    extra = {}
    for name in ("service.json", "versions.json", "build.json"):
        path = metrics_dir / name
        if path.is_file():
            extra[name.removesuffix(".json")] = json.loads(path.read_text(encoding="utf-8"))
    return {"stages": rows, **extra}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--tokenizer", type=Path, required=True)
    b.add_argument("--preset", choices=sorted(PRESETS), default="llama3-8b")
    a = sub.add_parser("arms-config")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--max-tokens", type=int, default=256)
    s = sub.add_parser("summarize")
    s.add_argument("--dir", type=Path, required=True)
    s.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "build":
        result = build(args.out, args.tokenizer, args.preset)
    elif args.cmd == "arms-config":
        result = arms_config(args.out, args.max_tokens)
    else:
        result = summarize(args.dir)
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        fmt = "{:<15} {:>3} {:>7} {:>7} {:>9} {:>10} {:>9} {:>10} {:>9}"
        print(fmt.format("stage", "rc", "wall_s", "load_s", "s/step", "tok/s", "s/100c", "peak_GB", "loop/gen"))
        for r in result["stages"]:
            print(
                fmt.format(
                    r.get("name", r["stage"]),
                    r["rc"],
                    r["wall_s"],
                    r.get("load_s", "-"),
                    r.get("s_per_step", "-"),
                    r.get("tokens_per_s", r.get("gen_tokens_per_s", "-")),
                    r.get("s_per_100_completions", "-"),
                    r["peak_process_gb"],
                    r.get("loop_over_generation", "-"),
                )
            )
        return 0
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
