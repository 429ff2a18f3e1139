"""Label-free GRPO trained longer, with curves (issue 25 items 3 and 4).

    python -m experiments.long_grpo --loop runs/toy-seed0 --workdir runs/long-grpo-seed0 \\
        --steps 450 --every 50 --rows regime_w_label_free majority

Starts from a finished toy loop (``python -m experiments.toy_loop --workdir DIR --seed N --quick``): its
toy base, data, SFT adapter and arm cache. Per row, GRPO from that SFT adapter with the row's reward for
``--steps`` optimizer steps (the recipe's cosine schedule stretched over them), an adapter saved every
``--every`` steps; then, per saved adapter:

* greedy dev accuracy (the eval stage, ``gsm8k_dev``, 800 problems): the curve;
* how its samples agree (the rollouts stage on ``--probe-questions`` train questions, 8 samples each at the
  recipe's temperature, scored by the majority vote, which needs no service): the share of groups whose 8
  answers are all the same, and of those, the share where that one answer is wrong — a label-free reward
  that collapses drives the first up and the accuracy down.

GRPO's own per-step log gives beside it the reward, the spread of rewards inside a group and the share of
groups with no spread at all (no gradient). Both rows run side by side (``--jobs``); the service (toy base
arms, the recipe set's scorer config, the loop's arm cache copied) serves the Regime W row.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from experiments.ablation import ALL_ROWS, Row
from experiments.toy_loop import TOY_CONFIG, Paths, Runner, accuracy_table, reward_service, run_parallel
from shared_schemas.answer import answers_equal
from trainer.jsonl import read_records
from trainer.records import RolloutRecord
from trainer.toy.determinism import subprocess_env

__all__ = ["LongRunSettings", "agreement", "run_long_grpo", "main"]


class LongRunSettings(argparse.Namespace):
    loop: Path
    workdir: Path
    steps: int
    every: int
    rows: list[str]
    probe_questions: int
    seed: int
    jobs: int
    threads: int


def agreement(records: Sequence[RolloutRecord]) -> dict[str, float | int]:
    """Of the groups (one question, its samples): the share whose answers are all the same, the share that
    are unanimous AND wrong (that one answer is not the gold, by ``answers_equal``; no answer is wrong), and
    the mean number of distinct answers (None counts as one)."""
    unanimous = unanimous_wrong = 0
    distinct = 0
    for record in records:
        answers = [t.final_answer for t in record.trajectories]
        counts = collections.Counter(answers)
        distinct += len(counts)
        if len(counts) == 1:
            unanimous += 1
            if not answers_equal(answers[0], record.gold_answer):
                unanimous_wrong += 1
    n = len(records)
    return {
        "groups": n,
        "unanimous": round(unanimous / n, 4) if n else 0.0,
        "unanimous_wrong": round(unanimous_wrong / n, 4) if n else 0.0,
        "distinct_answers_mean": round(distinct / n, 3) if n else 0.0,
    }


def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    found = sorted((int(p.name.split("-")[1]), p) for p in out.glob("checkpoint-*") if p.name.split("-")[1].isdigit())
    return found


def run_long_grpo(settings: LongRunSettings, say: Callable[[str], None] = print) -> dict[str, Any]:
    loop = Paths(settings.loop.resolve())
    for needed in (loop.base, loop.sft, loop.data / "train.jsonl", loop.split):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: run the toy loop into {settings.loop} first")
    work = settings.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = [ALL_ROWS[name] for name in settings.rows]
    data = ["--dataset", str(loop.data / "train.jsonl"), "--test_dataset", str(loop.data / "test.jsonl")]
    data += ["--split_file", str(loop.split)]
    model = ["--model_name_or_path", str(loop.base)]
    started = time.monotonic()

    def train(row: Row, url: list[str], env: dict[str, str] | None) -> None:
        rd = work / row.name
        if (rd / "grpo" / "adapter_config.json").exists():
            say(f"--- {row.name}: GRPO already done")
            return
        runner = Runner(Paths(rd), threads=settings.threads, verbose=False, say=say)
        runner.stage(
            "grpo",
            [
                *model,
                *data,
                "--adapter_path",
                str(loop.sft),
                "--output_dir",
                str(rd / "grpo"),
                "--seed",
                str(settings.seed),
                "--max_steps",
                str(settings.steps),
                "--save_strategy",
                "steps",
                "--save_steps",
                str(settings.every),
                *row.stage_flags(),
                *url,
            ],
            env=env,
        )
        (rd / "grpo_summary.json").write_text(json.dumps(runner.summaries["grpo"], indent=2) + "\n")

    service_rows = [r for r in rows if r.needs_service]
    local_rows = [r for r in rows if not r.needs_service]
    if service_rows:
        cache = work / "arm_cache.sqlite"
        if not cache.exists() and (loop.workdir / "arm_cache.sqlite").exists():
            shutil.copy(loop.workdir / "arm_cache.sqlite", cache)
        flags = ["--backend", "hf", "--model", str(loop.base), "--device", "cpu", "--dtype", "float32"]
        flags += ["--config", str(TOY_CONFIG), "--cache-path", str(cache), "--seed", str(settings.seed)]
        with reward_service(
            *flags, log_path=work / "reward-service.log", env=subprocess_env(settings.threads), say=say
        ) as (url, key):
            env = {"REGIME_W_URL": url, "REGIME_W_API_KEY": key}
            tasks = [functools.partial(train, r, ["--reward_url", url], env) for r in service_rows]
            tasks += [functools.partial(train, r, [], None) for r in local_rows]
            run_parallel(tasks, settings.jobs)
    else:
        run_parallel([functools.partial(train, r, [], None) for r in local_rows], settings.jobs)

    def measure(row: Row) -> dict[str, Any]:
        rd = work / row.name
        points = [(0, loop.sft), *_checkpoints(rd / "grpo")]
        runner = Runner(Paths(rd), threads=settings.threads, verbose=False, say=say)
        out = rd / "eval"
        if not (out / "results.json").exists():
            runner.stage(
                "eval",
                [
                    *model,
                    *data,
                    "--eval_datasets",
                    "gsm8k_dev",
                    "--eval_output_dir",
                    str(out),
                    "--eval_models",
                    *(f"step{step}={path}" for step, path in points),
                ],
            )
        table = accuracy_table(out / "results.json")["gsm8k_dev"]
        curve = []
        for step, path in points:
            probe = rd / f"probe-step{step}.jsonl"
            if not probe.exists():
                runner.stage(
                    "rollouts",
                    [
                        *model,
                        *data,
                        "--adapter_path",
                        str(path),
                        "--rollouts_file",
                        str(probe),
                        "--seed",
                        str(settings.seed),
                        "--max_train_samples",
                        str(settings.probe_questions),
                        "--reward",
                        "majority",
                    ],
                )
            curve.append(
                {
                    "step": step,
                    "dev_accuracy": table[f"step{step}"]["accuracy"],
                    "dev_correct": table[f"step{step}"]["correct"],
                    **agreement(list(read_records(probe, RolloutRecord))),
                }
            )
        summary = json.loads((rd / "grpo_summary.json").read_text())
        return {
            "row": row.name,
            "reward": row.reward,
            "label_free": row.label_free,
            "curve": curve,
            "reward_per_step": summary.get("reward_per_step"),
            "reward_std_per_step": summary.get("reward_std_per_step"),
            "frac_reward_zero_std_per_step": summary.get("frac_reward_zero_std_per_step"),
            "reward_wait_s": summary.get("reward_wait_s"),
            "train_runtime_s": summary.get("train_runtime_s"),
        }

    results: dict[str, Any] = {}

    def measure_into(row: Row) -> None:
        results[row.name] = measure(row)

    run_parallel([functools.partial(measure_into, r) for r in rows], settings.jobs)
    result = {
        "loop": str(settings.loop),
        "seed": settings.seed,
        "steps": settings.steps,
        "every": settings.every,
        "probe_questions": settings.probe_questions,
        "rows": results,
        "seconds": round(time.monotonic() - started, 1),
    }
    (work / "long_grpo.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, work / "long_grpo.png")
    for name, row_result in results.items():
        say(
            f"{name}: "
            + ", ".join(f"{p['step']}:{p['dev_accuracy']:.3f}/{p['unanimous_wrong']:.2f}" for p in row_result["curve"])
        )
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    """Dev accuracy and unanimous-wrong share per saved step, one line per row; GRPO's zero-spread share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for name, row in result["rows"].items():
        steps = [p["step"] for p in row["curve"]]
        axes[0].plot(steps, [100 * p["dev_accuracy"] for p in row["curve"]], marker="o", label=name)
        axes[1].plot(steps, [100 * p["unanimous_wrong"] for p in row["curve"]], marker="o", label=name)
        zero = [v for v in row.get("frac_reward_zero_std_per_step") or [] if v is not None]
        axes[2].plot(range(1, len(zero) + 1), [100 * v for v in zero], label=name, linewidth=0.8)
    axes[0].set_title("greedy dev accuracy (%)")
    axes[1].set_title(f"groups unanimous on a wrong answer (%, {result['probe_questions']} train q)")
    axes[2].set_title("GRPO groups with no reward spread (%)")
    for ax in axes:
        ax.set_xlabel("GRPO step")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loop", type=Path, required=True, help="a finished toy loop's workdir")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=450, help="GRPO steps (the recipe's 150 x 3)")
    parser.add_argument("--every", type=int, default=50, help="save and measure every this many steps")
    parser.add_argument("--rows", nargs="+", default=["regime_w_label_free", "majority"], choices=sorted(ALL_ROWS))
    parser.add_argument("--probe-questions", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="the loop's training seed")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv, namespace=LongRunSettings())
    if args.steps < args.every or args.every < 1:
        parser.error("--every must be between 1 and --steps")
    run_long_grpo(args, say=lambda text: print(text, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
