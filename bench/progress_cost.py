"""What the ``[progress]`` scorer variant costs: continuations and seconds per scored trajectory.

Scores rollouts in process (``reward_service.runtime.Runtime``, backend ``hf``) once with the variant
(``--config``, default ``toy_variants/progress.toml``) and once with the same config without its
``[progress]`` table (``--base-config``, default ``toy_variants/gold_path.toml``), one request per
question (a GRPO group), and prints, per trajectory: continuations generated and reused, the seconds of
continuation generation, and the wall seconds of scoring with and without the variant (arm generation
included in both: each run generates its own arms). ``--passes 2`` scores the same rollouts again (every
continuation from the cache: the cost of a group scored twice, as DPO's and GRPO's rows re-score).

Rollouts: ``--rollouts FILE``, a JSONL of ``{"question", "gold_answer"?, "trajectories": [{"output"} | str]}``
(``rl_rollouts.jsonl`` of a rollouts stage), or ``--toy N``: N toy problems (``trainer.toy.problems``,
``--seed``, ``--number-scale``) with ``--samples`` trajectories each sampled at temperature 1.0 from the arm model
itself or from ``--policy-model`` (written to ``--write-rollouts`` when given). Toy rollouts know their problems' true
intermediate results, so for them the bench also reports, in the groups where every sample is wrong, the
share of sample pairs with different partial credit (share of the true intermediate results a sample
computes) that each reward orders the same way (ties one half), as ``bench/toy_process_signal.py`` does:
the reward without the variant, with it, and ``s_prog`` alone (``(with − without) / β_progress``).

    python bench/progress_cost.py --toy 16 --model assets/toy_base --out bench/results/progress_cost.json
    python bench/progress_cost.py --rollouts runs/ablation-hard/seed0/regime_w/rl_rollouts.jsonl --limit 32
    python bench/progress_cost.py --toy 48 --number-scale 1.0 --policy-model assets/toy_base --model TEACHER_DIR
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from reward_service.generation import ArmPrompt, BackendConfig, create_backend
from reward_service.regime_w.config import load_config
from reward_service.regime_w.derived import scan_equations
from reward_service.runtime import Runtime
from reward_service.settings import Settings
from shared_schemas.answer import answers_equal, parse_answer
from shared_schemas.wire import ScoreItem, ScoreRequest

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ROOT / "reward_service" / "regime_w" / "toy_variants"
TOY_PROMPT = "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def read_rollouts(path: Path, limit: int | None) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        texts = [t["output"] if isinstance(t, dict) else t for t in r["trajectories"]]
        records.append({"question": r["question"], "gold_answer": r.get("gold_answer"), "trajectories": texts})
        if limit is not None and len(records) >= limit:
            break
    return records


def toy_rollouts(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``args.toy`` toy problems, ``args.samples`` trajectories each from the policy model (``--policy-model``,
    default the arm model) at temperature 1.0."""
    from trainer.toy.problems import generate_problems

    problems = generate_problems(args.toy, seed=args.seed, number_scale=args.number_scale)
    policy = args.policy_model or args.model
    backend = create_backend(BackendConfig(kind="hf", model=policy, device=args.device, dtype="float32"))
    assert backend is not None
    try:
        prompts = [
            ArmPrompt("rollout", (("user", TOY_PROMPT.format(question=p.question)),), 1.0, 1.0, 120, 1000 * i + j)
            for i, p in enumerate(problems)
            for j in range(args.samples)
        ]
        texts = backend.generate(prompts)
    finally:
        backend.close()
    return [
        {
            "question": p.question,
            "gold_answer": str(p.answer_value),
            "trajectories": texts[i * args.samples : (i + 1) * args.samples],
            "gold_steps": sorted({str(step.result) for step in p.steps}),
        }
        for i, p in enumerate(problems)
    ]


async def score_all(
    settings: Settings, records: list[dict[str, Any]], passes: int
) -> tuple[list[dict[str, Any]], list[list[float]]]:
    """Each pass: one request a question; per pass the wall seconds and the progress scorer's totals;
    and the rewards of the first pass."""
    out = []
    rewards: list[list[float]] = []
    async with Runtime.running(settings) as runtime:
        progress = runtime.scoring.progress
        for n in range(passes):
            before = (progress.totals.generated, progress.totals.reused, progress.totals.seconds) if progress else None
            started = time.perf_counter()
            for r in records:
                item = ScoreItem(
                    id="q", question=r["question"], gold_answer=r["gold_answer"], trajectories=r["trajectories"]
                )
                response = await runtime.scoring.score(ScoreRequest(items=[item], return_details=False))
                if n == 0:
                    rewards.append([s.reward for s in response.results[0].scores])
            row: dict[str, Any] = {"pass": n + 1, "wall_seconds": time.perf_counter() - started}
            if progress is not None and before is not None:
                row["continuations_generated"] = progress.totals.generated - before[0]
                row["continuations_reused"] = progress.totals.reused - before[1]
                row["progress_seconds"] = progress.totals.seconds - before[2]
            out.append(row)
    return out, rewards


def ordering(records: list[dict[str, Any]], rewards: list[list[float]]) -> tuple[float, int, int]:
    """In the groups where every sample is wrong: the share of pairs with different partial credit that
    ``rewards`` orders the same way (ties one half), the number of such pairs and of such groups."""
    agree, pairs, groups = 0.0, 0, 0
    for r, reward in zip(records, rewards):
        texts, gold = r["trajectories"], r["gold_answer"]
        if any(answers_equal(parse_answer(t).value, gold) for t in texts):
            continue
        groups += 1
        steps = set(r["gold_steps"])
        part = [len(scan_equations(t).results & steps) / len(steps) for t in texts]
        for a, b in itertools.permutations(range(len(texts)), 2):
            if part[a] > part[b]:
                pairs += 1
                agree += 1.0 if reward[a] > reward[b] else 0.5 if reward[a] == reward[b] else 0.0
    return (agree / pairs if pairs else float("nan")), pairs, groups


def settings_for(args: argparse.Namespace, config: Path) -> Settings:
    return Settings(
        backend="hf",
        model=args.model,
        device=args.device,
        config_path=config,
        cache_path="none",
        insecure_no_auth=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--rollouts", type=Path, help="a rollouts JSONL")
    source.add_argument("--toy", type=int, help="sample this many toy problems' rollouts from the arm model")
    parser.add_argument("--limit", type=int, default=None, help="the first N questions of --rollouts")
    parser.add_argument("--samples", type=int, default=8, help="--toy: trajectories per question")
    parser.add_argument("--seed", type=int, default=1, help="--toy: the problems' seed")
    parser.add_argument("--number-scale", type=float, default=0.5, help="--toy: the generator's number_scale")
    parser.add_argument("--write-rollouts", type=Path, default=None, help="--toy: write the rollouts here")
    parser.add_argument("--model", default=str(ROOT / "assets" / "toy_base"), help="the arm model (backend hf)")
    parser.add_argument(
        "--policy-model",
        default=None,
        help="--toy: sample the rollouts from this model instead of the arm model (e.g. the toy base as the policy, "
        "a stronger teacher as --model: arms and continuations from the teacher)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", type=Path, default=VARIANTS / "progress.toml")
    parser.add_argument("--base-config", type=Path, default=VARIANTS / "gold_path.toml")
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    records = read_rollouts(args.rollouts, args.limit) if args.rollouts else toy_rollouts(args)
    if args.write_rollouts is not None:
        args.write_rollouts.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    n_traj = sum(len(r["trajectories"]) for r in records)
    policy = f"; rollouts from {args.policy_model}" if args.policy_model and not args.rollouts else ""
    print(f"{len(records)} questions, {n_traj} trajectories; arm model {args.model} on {args.device}{policy}")

    results: dict[str, Any] = {
        "questions": len(records),
        "trajectories": n_traj,
        "model": Path(args.model).name,
        "policy_model": Path(args.policy_model or args.model).name if not args.rollouts else None,
        "device": args.device,
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "python": sys.version.split()[0],
        "rollouts": (
            {"file": args.rollouts.name, "limit": args.limit}
            if args.rollouts
            else {"toy": args.toy, "samples": args.samples, "seed": args.seed, "number_scale": args.number_scale}
        ),
    }
    rewards: dict[str, list[list[float]]] = {}
    for name, config in (("without", args.base_config), ("with", args.config)):
        rows, rewards[name] = asyncio.run(score_all(settings_for(args, config), records, args.passes))
        results[name] = {"config": config.name, "passes": rows}
        for row in rows:
            line = f"{name:>7} [progress] ({config.name}) pass {row['pass']}: {row['wall_seconds'] / n_traj:.3f} s/trajectory"
            if "continuations_generated" in row:
                line += (
                    f", continuations/trajectory generated {row['continuations_generated'] / n_traj:.2f}"
                    f" reused {row['continuations_reused'] / n_traj:.2f}"
                    f", continuation seconds/trajectory {row['progress_seconds'] / n_traj:.3f}"
                )
            print(line)
    spec = load_config(args.config).progress
    if all("gold_steps" in r for r in records) and spec is not None and spec.beta_progress > 0:
        s_prog = [
            [(a - b) / spec.beta_progress for a, b in zip(w, wo)] for w, wo in zip(rewards["with"], rewards["without"])
        ]
        results["all_wrong_ordering"] = {}
        for name, values in (("without", rewards["without"]), ("with", rewards["with"]), ("s_prog", s_prog)):
            share, pairs, groups = ordering(records, values)
            results["all_wrong_ordering"][name] = share
            print(f"all-wrong groups ({groups}, {pairs} pairs): {name} orders by partial path {share:.3f}")
        wrong = [
            p
            for r, row in zip(records, s_prog)
            if not any(answers_equal(parse_answer(t).value, r["gold_answer"]) for t in r["trajectories"])
            for p in row
        ]
        zero = sum(1 for p in wrong if abs(p) < 1e-9)
        results["all_wrong_s_prog_zero"] = [zero, len(wrong)]
        print(f"all-wrong groups: s_prog = 0 (no continuation and no arm reached the gold) for {zero} of {len(wrong)}")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
