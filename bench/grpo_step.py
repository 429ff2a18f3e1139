"""GRPO step without vLLM: TRL's ``GRPOTrainer`` beside the trainer's GRPO (issue 15 item 1).

Both sides load the same bf16 checkpoint as a 4-bit NF4 base (double quantization, bf16 compute),
put a fresh LoRA r=64 (alpha 16, q/k/v/o) on it, and run GRPO on the same GSM8K prompts (the chat
template's generation prompt) with ``num_generations`` samples of exactly ``max_completion_length``
new tokens (a random-weight model practically never samples EOS), bf16, gradient checkpointing, and
the same cheap reward (completion length; no reward service, so the step is generation + training).

* ``trl``: ``trl.GRPOTrainer`` + ``GRPOConfig`` with TRL's defaults, as a user would write it (the
  issue's baseline: 18.4 s a step at 8 generations x 256 tokens on an H100).
* ``trainer``: what ``regime-w-train grpo`` builds: ``trainer.modeling`` loading, ``GRPOStageConfig``
  with the 8B recipe's knobs (``loss_type: dapo``, ``beta: 0``, ``paged_adamw_8bit``) and
  ``FastGenerationGRPOTrainer`` with the ``generation_engine`` and ``grpo_policy_copy`` of the row
  (rows measured before the one-setting rename said ``merged_bf16`` for ``hf`` + ``merged_bf16``
  and ``trl`` for ``hf`` + ``none``).

s/step = median over the timed optimizer steps (after ``--warmup`` steps) of step begin to step end,
CUDA synchronized; generated tokens/s = completions per step x mean completion length / s per step.

    python3 bench/grpo_step.py one --path trl --model DIR --tokenizer DIR --data train.jsonl
    python3 bench/grpo_step.py suite --model DIR --data train.jsonl --results-dir R [--only a,b]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LORA = {"r": 64, "alpha": 16, "dropout": 0.05, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}
ISSUE_BASELINE = {"s_per_step": 18.4, "peak_gb": 7.2, "setting": "TRL 1.16 GRPOTrainer, NF4 + LoRA r64, 8 x 256"}


@dataclass
class Spec:
    name: str
    path: str  # "trl" | "trainer"
    engine: str = "hf"  # trainer only: generation_engine
    policy_copy: str = "none"  # trainer only: grpo_policy_copy
    static_cache: bool = True  # trainer grpo_policy_copy merged_bf16 only
    batch: int = 8  # per_device_train_batch_size (= num_generations: one prompt a micro-batch)
    accum: int = 1  # gradient_accumulation_steps (TRL generates batch x accum completions at once)
    generations: int = 8
    tokens: int = 256


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def length_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """A cheap reward with some spread (GRPO needs non-equal rewards in a group to have a gradient)."""
    return [float(len(str(c)) % 7) / 7.0 for c in completions]


def _dataset(data: Path, tokenizer: Any, n: int) -> Any:
    from datasets import Dataset

    from trainer.prompts import build_prompt

    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()][:n]
    return Dataset.from_list([{"prompt": build_prompt(r["question"], tokenizer)} for r in rows])


def run_one(spec: Spec, model_dir: str, data: Path, warmup: int, steps: int) -> dict[str, Any]:
    import torch
    from transformers import TrainerCallback

    cuda = torch.cuda.is_available()
    ends: list[float] = []
    starts: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if cuda:
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            _sync()
            starts.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            _sync()
            ends.append(time.perf_counter())

    from trainer.configs import LoraArguments, ModelArguments
    from trainer.modeling import load_base_model, load_tokenizer, lora_config

    model_args = ModelArguments(
        model_name_or_path=model_dir, quantization="4bit", torch_dtype="bfloat16", attn_implementation="sdpa"
    )
    lora = lora_config(
        LoraArguments(
            lora_r=LORA["r"],
            lora_alpha=LORA["alpha"],
            lora_dropout=LORA["dropout"],
            lora_target_modules=list(LORA["targets"]),
        )
    )
    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model_args)
    total = warmup + steps
    dataset = _dataset(data, tokenizer, max(16, total * spec.batch * spec.accum // spec.generations))
    common = dict(
        per_device_train_batch_size=spec.batch,
        gradient_accumulation_steps=spec.accum,
        num_generations=spec.generations,
        max_completion_length=spec.tokens,
        max_steps=total,
        bf16=cuda,
        gradient_checkpointing=True,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=42,
    )
    with tempfile.TemporaryDirectory() as out:
        if spec.path == "trl":
            from trl import GRPOConfig, GRPOTrainer

            model = load_base_model(model_args, for_training=True)
            config = GRPOConfig(output_dir=out, **common)
            trainer = GRPOTrainer(
                model=model,
                reward_funcs=[length_reward],
                args=config,
                train_dataset=dataset,
                processing_class=tokenizer,
                peft_config=lora,
                callbacks=[Timer()],
            )
        elif spec.path == "trainer":
            from trainer.generation.grpo import FastGenerationGRPOTrainer, fast_generation_config
            from trainer.stages.grpo import GRPOStageConfig

            model = load_base_model(model_args, for_training=True)
            config = GRPOStageConfig(
                output_dir=out,
                loss_type="dapo",
                beta=0.0,
                optim="paged_adamw_8bit",
                temperature=0.6,
                top_p=0.95,
                learning_rate=1e-6,
                generation_engine=spec.engine,
                grpo_policy_copy=spec.policy_copy,
                generation_static_cache=spec.static_cache,
                precompute_arms=False,
                **common,
            )
            trainer = FastGenerationGRPOTrainer(
                model=model,
                fast_generation=fast_generation_config(config),
                reward_funcs=[length_reward],
                args=config,
                train_dataset=dataset,
                processing_class=tokenizer,
                peft_config=lora,
                callbacks=[Timer()],
            )
        else:
            raise ValueError(f"unknown path {spec.path!r}")
        load_s = time.perf_counter() - t0
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    durations = [e - s for s, e in zip(starts, ends)]
    timed = durations[warmup:] or durations
    s_step = statistics.median(timed)
    completions = spec.batch * spec.accum
    lengths = [h.get("completions/mean_length") for h in logs[warmup:] if h.get("completions/mean_length")]
    mean_len = statistics.mean(lengths) if lengths else float(spec.tokens)
    return {
        **asdict(spec),
        "load_s": round(load_s, 1),
        "s_per_step": round(s_step, 3),
        "s_per_step_all": [round(d, 3) for d in durations],
        "completions_per_step": completions,
        "completion_mean_length": round(mean_len, 1),
        "gen_tokens_per_s": round(completions * mean_len / s_step, 1),
        "s_per_8_completions": round(s_step * 8 / completions, 3),
        "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if cuda else None,
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 2) if cuda else None,
        "losses": [h.get("loss") for h in logs],
        "device_name": torch.cuda.get_device_name() if cuda else "cpu",
    }


def default_specs(tokens: int) -> list[Spec]:
    return [
        Spec("trl-b8", "trl", tokens=tokens),
        Spec("trainer-merged-static-b8", "trainer", policy_copy="merged_bf16", tokens=tokens),
        Spec("trainer-merged-static-b8x4", "trainer", policy_copy="merged_bf16", accum=4, tokens=tokens),
        Spec("trainer-merged-eager-b8", "trainer", policy_copy="merged_bf16", static_cache=False, tokens=tokens),
        Spec("trainer-trlgen-b8", "trainer", engine="hf", tokens=tokens),
    ]


def suite(args: argparse.Namespace) -> int:
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    summary_path = results_dir / "summary.json"
    results: dict[str, Any] = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    only = set(args.only.split(",")) if args.only else None
    started = time.monotonic()
    for spec in default_specs(args.tokens):
        if only is not None and spec.name not in only:
            continue
        if spec.name in results and "error" not in results[spec.name]:
            continue
        if time.monotonic() - started > args.budget_s:
            print(f"[suite] budget spent; not started: {spec.name}", flush=True)
            continue
        out = results_dir / f"{spec.name}.json"
        cmd = [
            sys.executable,
            __file__,
            "one",
            "--spec",
            json.dumps(asdict(spec)),
            "--model",
            args.model,
            "--data",
            str(args.data),
            "--warmup",
            str(args.warmup),
            "--steps",
            str(args.steps),
            "--json-out",
            str(out),
        ]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        (results_dir / f"{spec.name}.log").write_text(proc.stdout[-20000:] + proc.stderr[-20000:])
        if proc.returncode == 0 and out.exists():
            results[spec.name] = json.loads(out.read_text())
        else:
            results[spec.name] = {**asdict(spec), "error": proc.stderr[-3000:]}
        r = results[spec.name]
        print(
            f"[suite] {spec.name}: {time.monotonic() - t0:.0f} s: "
            + (
                f"{r['s_per_step']} s/step {r['gen_tokens_per_s']} tok/s {r['peak_gb']} GB"
                if "error" not in r
                else "FAILED " + r["error"][-600:]
            ),
            flush=True,
        )
        summary_path.write_text(json.dumps(results, indent=1) + "\n")
    base = results.get("trl-b8", {}).get("s_per_step")
    for r in results.values():
        if base and "s_per_8_completions" in r:
            r["speedup_vs_trl_b8_per_8_completions"] = round(base / r["s_per_8_completions"], 2)
    summary_path.write_text(json.dumps({"issue_baseline": ISSUE_BASELINE, **results}, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("one")
    one.add_argument("--spec", help="a Spec as JSON (suite use)")
    one.add_argument("--path", choices=["trl", "trainer"])
    one.add_argument("--engine", default="hf", help="generation_engine: auto | hf | fast | vllm")
    one.add_argument("--policy-copy", default="merged_bf16", help="grpo_policy_copy (generation_engine hf only)")
    one.add_argument("--no-static-cache", action="store_true")
    one.add_argument("--batch", type=int, default=8)
    one.add_argument("--accum", type=int, default=1)
    one.add_argument("--generations", type=int, default=8)
    one.add_argument("--tokens", type=int, default=256)
    one.add_argument("--json-out", type=Path)
    s = sub.add_parser("suite")
    s.add_argument("--results-dir", type=Path, required=True)
    s.add_argument("--only")
    s.add_argument("--budget-s", type=float, default=1e9)
    s.add_argument("--tokens", type=int, default=256)
    for p in (one, s):
        p.add_argument("--model", required=True)
        p.add_argument("--data", type=Path, required=True)
        p.add_argument("--warmup", type=int, default=1)
        p.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.cmd == "suite":
        return suite(args)
    if args.spec:
        spec = Spec(**json.loads(args.spec))
    else:
        if args.path is None:
            parser.error("one needs --path or --spec")
        spec = Spec(
            f"{args.path}-cli",
            args.path,
            engine=args.engine,
            policy_copy=args.policy_copy if args.engine == "hf" else "none",
            static_cache=not args.no_static_cache,
            batch=args.batch,
            accum=args.accum,
            generations=args.generations,
            tokens=args.tokens,
        )
    result = run_one(spec, args.model, args.data, args.warmup, args.steps)
    print(json.dumps(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
