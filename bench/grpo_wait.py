"""The GRPO loop's wait on the reward service (DESIGN §7: arms cached, < 2% of a step).

Builds a tiny Llama (a bit larger than the tests': hidden 128, 4 layers by default, so a step does
real work on the CPU), writes a GSM8K-format data set, starts the real ``regime-w-serve`` (backend
``hf`` on the same tiny model, short arms, API key) and runs the ``grpo`` stage
(``trainer.stages.grpo.run``: TRL ``GRPOTrainer``, ``RegimeWReward`` over HTTP) twice, each time
against a fresh service with an empty arm cache:

- ``cached``: ``precompute_arms: true`` (the default) — before step 1 the stage fills the cache
  for every question the run will draw, through ``POST /v1/arms/precompute``;
- ``cold``: ``precompute_arms: false`` — every step's new questions wait on arm generation.

Per step it reports TRL's ``step_time`` (generation + reward + loss/backward of the step) and the
seconds spent inside ``RegimeWReward``'s HTTP scoring calls (``regime_w/wait_s``, which the reward
function logs each step); the share is the sum of the waits over the sum of the step times,
step 1 left out (warm-up), and, robust to a step slowed by other jobs, the median of the per-step
shares. The service's ``/metrics`` give the arm cache hits/misses of each run.

    python3 bench/grpo_wait.py --out bench/results/grpo_wait.json
    python3 bench/grpo_wait.py --steps 4 --questions 16          # quicker

The trainer and the service share the machine's cores; while the trainer waits on a cold-cache
step it is idle, so arm generation has the cores to itself. Other jobs on the machine slow single
steps (and the precompute) by up to 30x: read the per-step table and the median share, and
``machine.loadavg_*`` in the JSON.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from experiments.toy_loop import reward_service  # noqa: E402
from tests.support.service_config import small_service_config  # noqa: E402
from tests.support.tiny_model import build_tiny_model  # noqa: E402

KEY = "bench-grpo-key-0123456789abcdef"
SCENARIOS = ("cached", "cold")

_TEMPLATES = (
    ("A baker makes {a} loaves a day. How many loaves does she make in {b} days?", lambda a, b: a * b, "{a}*{b}={r}"),
    ("Tom has {a} marbles and buys {b} more. How many marbles does he have now?", lambda a, b: a + b, "{a}+{b}={r}"),
    ("A shelf holds {a} books. {b} books are taken away. How many books are left?", lambda a, b: a - b, "{a}-{b}={r}"),
    ("Each box holds {b} pens. How many pens are in {a} boxes?", lambda a, b: a * b, "{a}*{b}={r}"),
    ("Mia earns ${a} an hour and works {b} hours. How much does she earn?", lambda a, b: a * b, "{a}*{b}={r}"),
)


def write_dataset(path: Path, n: int) -> Path:
    """``n`` distinct GSM8K-format rows (``question``, ``answer`` ending in ``#### N``)."""
    rows = []
    for i in range(n):
        template, fn, work = _TEMPLATES[i % len(_TEMPLATES)]
        a, b = 12 + 3 * i, 2 + i % 7
        r = fn(a, b)
        rows.append({"question": template.format(a=a, b=b), "answer": f"{work.format(a=a, b=b, r=r)}\n#### {r}"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def scrape(url: str) -> dict[str, float]:
    """The arm-cache and generation counters of the service's ``/metrics``."""
    wanted = {
        "regime_w_arm_cache_misses_total": "cache_misses",
        "regime_w_arm_generations_total": "arm_generations",
        "regime_w_generation_seconds_sum": "generation_s",
    }
    out = dict.fromkeys((*wanted.values(), "cache_hits", "score_requests", "score_server_s"), 0.0)
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("regime_w_arm_cache_hits_total"):
            out["cache_hits"] += float(value)
        elif name == 'regime_w_request_seconds_count{route="/v1/score"}':
            out["score_requests"] = float(value)
        elif name == 'regime_w_request_seconds_sum{route="/v1/score"}':
            out["score_server_s"] = float(value)
        elif name in wanted:
            out[wanted[name]] = float(value)
    return out


def run_scenario(name: str, args: argparse.Namespace, model_dir: Path, data: Path, work: Path) -> dict[str, Any]:
    from trainer.configs import DataArguments, LoraArguments, ModelArguments, RewardServiceArguments
    from trainer.stages import grpo

    env = {
        "REGIME_W_DEVICE": "cpu",
        "REGIME_W_CONFIG_PATH": str(small_service_config(work, max_tokens=args.arm_max_tokens)),
        "REGIME_W_CACHE_PATH": str(work / f"arms-{name}.sqlite3"),
        "REGIME_W_API_KEYS": KEY,
        "REGIME_W_LOG_LEVEL": "warning",
    }
    with reward_service(
        "--backend",
        "hf",
        "--model",
        str(model_dir),
        log_path=work / f"service-{name}.log",
        env={**os.environ, **env},
        ready_timeout_s=300,
        say=lambda _: None,
        api_key=KEY,
    ) as (url, _key):
        before = scrape(url)
        config = grpo.GRPOStageConfig(
            output_dir=str(work / f"lora_grpo-{name}"),
            precompute_arms=name == "cached",
            num_generations=args.num_generations,
            per_device_train_batch_size=args.batch,
            gradient_accumulation_steps=1,
            max_completion_length=args.max_completion_length,
            max_steps=args.steps,
            learning_rate=1e-4,
            temperature=1.0,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_vllm=False,
            seed=args.seed,
        )
        started = time.perf_counter()
        summary = grpo.run(
            ModelArguments(model_name_or_path=str(model_dir), quantization="none", torch_dtype="float32"),
            LoraArguments(lora_r=8, lora_alpha=16),
            DataArguments(dataset=str(data), split_file=str(work / "split.json"), max_train_samples=args.questions),
            RewardServiceArguments(reward_url=url),
            config,
        )
        wall = time.perf_counter() - started
        after = scrape(url)
    waits = summary["reward_wait_s_per_step"]
    steps = summary["step_time_s_per_step"]
    if len(waits) != args.steps or any(v is None for v in (*waits, *steps)):
        raise RuntimeError(f"{name}: expected {args.steps} logged steps with wait and step_time, got {summary}")
    service = {k: round(after[k] - before[k], 4) for k in after}
    # time inside the service per /v1/score request; the rest of a wait is HTTP + client (de)serialization
    service["score_server_s_mean"] = round(service["score_server_s"] / max(service["score_requests"], 1), 5)
    measured = slice(1, None)  # step 1 is warm-up
    wait_sum, step_sum = sum(waits[measured]), sum(steps[measured])
    return {
        "scenario": name,
        "precompute": summary["precompute"],
        "stage_wall_s": round(wall, 3),
        "train_runtime_s": summary["train_runtime_s"],
        "questions": summary["questions"],
        "reward_calls": summary["reward_calls"],
        "steps": [
            {"step": i + 1, "step_s": round(t, 4), "reward_wait_s": round(w, 4), "share": round(w / t, 5)}
            for i, (w, t) in enumerate(zip(waits, steps))
        ],
        "excluding_step_1": {
            "step_s_sum": round(step_sum, 4),
            "reward_wait_s_sum": round(wait_sum, 4),
            "share": round(wait_sum / step_sum, 5),
            "mean_step_s": round(step_sum / len(steps[measured]), 4),
            "mean_reward_wait_s": round(wait_sum / len(waits[measured]), 4),
            # robust to a step slowed by other jobs on the machine
            "median_step_share": round(statistics.median(w / t for w, t in zip(waits[measured], steps[measured])), 5),
        },
        "service": service,
    }


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"\n{'scenario':<8} {'step':>4} {'step_s':>8} {'wait_s':>8} {'share':>8}")
    for r in results:
        for s in r["steps"]:
            print(
                f"{r['scenario']:<8} {s['step']:>4} {s['step_s']:>8.3f} {s['reward_wait_s']:>8.4f} "
                f"{100 * s['share']:>7.2f}%"
            )
    print(
        f"\n{'scenario':<8} {'precompute_s':>12} {'stage_wall_s':>12} {'steps 2..n s':>12} {'wait s':>8} "
        f"{'share':>8} {'median':>8} {'misses':>7} {'hits':>6}"
    )
    for r in results:
        ex, pre = r["excluding_step_1"], r["precompute"] or {}
        print(
            f"{r['scenario']:<8} {pre.get('seconds', 0.0):>12.2f} {r['stage_wall_s']:>12.2f} "
            f"{ex['step_s_sum']:>12.2f} {ex['reward_wait_s_sum']:>8.3f} {100 * ex['share']:>7.2f}% "
            f"{100 * ex['median_step_share']:>7.2f}% {r['service']['cache_misses']:>7.0f} {r['service']['cache_hits']:>6.0f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument(
        "--questions", type=int, default=32, help="training questions (the data set has 25%% more for the dev split)"
    )
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16, help="per_device_train_batch_size (completions per step)")
    parser.add_argument("--max-completion-length", type=int, default=48)
    parser.add_argument("--arm-max-tokens", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    args = parser.parse_args(argv)
    if args.batch % args.num_generations:
        parser.error("--batch must be divisible by --num-generations")

    import torch

    os.environ["REGIME_W_API_KEY"] = KEY
    load_at_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="grpo-wait-") as tmp:
        work = Path(tmp)
        model_dir = build_tiny_model(work / "model", hidden_size=args.hidden, num_layers=args.layers)
        data = write_dataset(work / "train.jsonl", args.questions + (args.questions + 3) // 4)
        for name in args.scenarios:
            print(f"== {name}", flush=True)
            results.append(run_scenario(name, args, model_dir, data, work))
    print_table(results)
    report = {
        "benchmark": "grpo_wait",
        "target": "reward wait < 2% of a GRPO step with arms cached (DESIGN §7)",
        "command": "python3 bench/grpo_wait.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "total_s": round(time.perf_counter() - started, 1),
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "policy": "tiny Llama, LoRA r=8 on q/k/v/o, float32, no quantization",
            "arm_backend": "hf (same tiny model), 8 arms",
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
