"""In-process throughput of the Regime W scorer (DESIGN §7: >= 20,000 trajectories/s per core).

Builds ~10,000 realistic R1-style trajectories (300-2,000 chars, ``<think>`` blocks, equations,
some of them wrong, some without a final answer) over ~100 questions with 8 arm texts each, all
synthetic and seeded (or drawn from a GSM8K JSONL with ``--gsm8k``), then times ``prepare_arms``
and ``score_trajectories`` on one core, ``--repeats`` times, and reports the median.

    python3 bench/score_inprocess.py --out bench_score.json
    python3 bench/score_inprocess.py --gsm8k path/to/train.jsonl --profile

The answer-parse cache of ``shared_schemas`` is cleared before every repeat, so each repeat parses
every text afresh, as a service sees new trajectories.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass

from reward_service.regime_w.config import default_config
from reward_service.regime_w.derived import numbers_in
from reward_service.regime_w.scorer import ArmText, prepare_arms, score_trajectories
from shared_schemas import answer as answer_module
from shared_schemas.answer import gold_answer, normalize_number


@dataclass
class Problem:
    question: str
    steps: list[tuple[str, float]]  # (expression, value), in order; the last is the answer
    gold: str


@dataclass
class Workload:
    problems: list[Problem]
    arms: list[list[ArmText]]
    trajectories: list[list[str]]
    num_tokens: list[list[int]]


def _fmt(x: float) -> str:
    if abs(x - round(x)) < 1e-9:
        return str(round(x))
    return f"{x:.2f}".rstrip("0").rstrip(".")


def synthetic_problem(rng: random.Random) -> Problem:
    """A 2-4 step word problem with its arithmetic path."""
    name = rng.choice(["Natalia", "Weng", "Betty", "Julie", "James", "Albert", "Ken", "Alexis"])
    item = rng.choice(["clips", "books", "apples", "stickers", "cupcakes", "marbles"])
    a, b, c, d = rng.randint(2, 60), rng.randint(2, 40), rng.randint(2, 12), rng.randint(1, 30)
    kind = rng.randrange(3)
    if kind == 0:
        q = (
            f"{name} had {a} {item}. She bought {b} more, then each of her {c} friends gave her "
            f"as many {item} again. How many {item} does she have if she then gives away {d}?"
        )
        s1 = a + b
        s2 = s1 * c
        s3 = s2 - d
        steps = [(f"{a} + {b}", s1), (f"{s1} * {c}", s2), (f"{s2} - {d}", s3)]
    elif kind == 1:
        price = rng.choice([0.25, 0.5, 1.5, 2, 3.75, 12])
        q = f"{name} sells {a} {item} at ${price} each and {b} more at the same price. How much money does {name} make?"
        s1 = a + b
        s2 = s1 * price
        steps = [(f"{a} + {b}", s1), (f"{s1} x ${_fmt(price)}", s2)]
    else:
        q = (
            f"{name} reads {a} pages a day for {c} days, then {b} pages a day for {d} days. "
            f"How many pages does {name} read in total?"
        )
        s1, s2 = a * c, b * d
        steps = [(f"{a} * {c}", s1), (f"{b} * {d}", s2), (f"{s1} + {s2}", s1 + s2)]
    return Problem(q, steps, f"#### {_fmt(steps[-1][1])}")


def gsm8k_problems(path: str, rng: random.Random, count: int) -> list[Problem]:
    """Problems from a GSM8K JSONL: calculator annotations give the arithmetic path."""
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    rng.shuffle(rows)
    out = []
    calc = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
    for row in rows:
        steps = []
        for m in calc.finditer(row["answer"]):
            v = normalize_number(m.group(2))
            if v is not None:
                steps.append((m.group(1), float(v)))
        g = gold_answer(row["answer"])
        if not steps or g is None:
            continue
        steps[-1] = (steps[-1][0], float(g))
        out.append(Problem(row["question"], steps, f"#### {g}"))
        if len(out) == count:
            break
    return out


_FILLER = [
    "Let me make sure I understand the question.",
    "Hmm, wait, I should double-check that.",
    "Okay, that seems right so far.",
    "Let me re-read the problem to be sure nothing is missed.",
    "So that's the next quantity I need.",
    "Alternatively, I could think about it another way, but this is simpler.",
]


def _path_lines(p: Problem, rng: random.Random, wrong_step: int | None, latex: bool) -> list[str]:
    lines = []
    for i, (expr, value) in enumerate(p.steps):
        shown = value + rng.choice([1, -1, 10]) if i == wrong_step else value
        e = expr.replace("*", "\\times") if latex else expr
        if latex:
            lines.append(f"\\( {e} = {_fmt(shown)} \\)")
        else:
            lines.append(rng.choice(["So ", "Then ", "", "That gives "]) + f"{e} = {_fmt(shown)}.")
    return lines


def arm_text(p: Problem, arm: str, rng: random.Random) -> str:
    wrong = rng.randrange(len(p.steps)) if rng.random() < 0.2 else None
    lines = _path_lines(p, rng, wrong, latex=False)
    answer = p.steps[-1][1] if wrong is None else p.steps[-1][1] + (wrong + 1)
    if arm == "arithmetic_trace":
        body = "\n".join(line.split(" ", 1)[-1] if line[0].isalpha() else line for line in lines)
    elif arm in ("solve_then_verify", "work_backwards"):
        body = "\n".join(lines) + f"\nCheck: substituting back, {_fmt(answer)} satisfies every condition."
    else:
        body = "Step by step:\n" + "\n".join(f"Step {i + 1}: {ln}" for i, ln in enumerate(lines))
    return f"{body}\n#### {_fmt(answer)}"


def trajectory(p: Problem, rng: random.Random) -> str:
    """An R1-style completion: a <think> block with filler and equations, then a stated answer."""
    wrong = rng.randrange(len(p.steps)) if rng.random() < 0.25 else None
    latex = rng.random() < 0.4
    think = []
    for line in _path_lines(p, rng, wrong, latex=False):
        think.extend(rng.sample(_FILLER, rng.randint(0, 2)))
        think.append(line)
    target = rng.randint(300, 2000)
    out = "<think>\n" + " ".join(think)
    while len(out) < max(target - 250, 300):
        out += " " + rng.choice(_FILLER)
    out += "\n</think>\n\n" + "\n".join(_path_lines(p, rng, wrong, latex))
    final = p.steps[-1][1] if wrong is None else p.steps[-1][1] + 1
    style = rng.random()
    if style < 0.45:
        out += f"\n\nThe final answer is \\boxed{{{_fmt(final)}}}."
    elif style < 0.8:
        out += f"\n#### {_fmt(final)}"
    elif style < 0.9:
        out += f"\nSo the answer is {_fmt(final)} {rng.choice(['dollars', 'pages', 'items'])}."
    # else: truncated, no final answer stated (last-number fallback)
    return out[:2000]


def build_workload(questions: int, per_question: int, seed: int, gsm8k: str | None) -> Workload:
    rng = random.Random(seed)
    problems = gsm8k_problems(gsm8k, rng, questions) if gsm8k else [synthetic_problem(rng) for _ in range(questions)]
    config = default_config()
    arms = [[ArmText(name, arm_text(p, name, rng)) for name in config.arm_names] for p in problems]
    trajs = [[trajectory(p, rng) for _ in range(per_question)] for p in problems]
    tokens = [[max(1, len(t) // 4) for t in ts] for ts in trajs]
    return Workload(problems, arms, trajs, tokens)


def _clear_answer_parse_cache() -> None:
    """Forget every parsed answer (not the normalized numbers), so each repeat parses afresh."""
    for name in dir(answer_module):
        fn = getattr(answer_module, name)
        if "parse" in name and hasattr(fn, "cache_clear"):
            fn.cache_clear()


def run_once(w: Workload, clock=time.perf_counter) -> tuple[float, float, list[float]]:
    """Seconds to prepare all arms, seconds to score all trajectories, and all rewards."""
    config = default_config()
    _clear_answer_parse_cache()
    numbers_in.cache_clear()
    t0 = clock()
    prepared = [prepare_arms(p.question, a, config) for p, a in zip(w.problems, w.arms)]
    t1 = clock()
    rewards: list[float] = []
    for p, arms, ts, nt in zip(w.problems, prepared, w.trajectories, w.num_tokens):
        rewards.extend(s.reward for s in score_trajectories(ts, nt, arms, config, p.gold))
    t2 = clock()
    return t1 - t0, t2 - t1, rewards


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--per-question", type=int, default=100, help="trajectories per question")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gsm8k", default=None, help="GSM8K JSONL to draw questions and solution paths from")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one extra repeat")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: process_time (use on a shared, busy machine)",
    )
    args = ap.parse_args(argv)

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    w = build_workload(args.questions, args.per_question, args.seed, args.gsm8k)
    n_traj = sum(len(t) for t in w.trajectories)
    chars = [len(t) for ts in w.trajectories for t in ts]
    run_once(w)  # warm-up (imports, regex compilation)
    prep, score = [], []
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    for _ in range(args.repeats):
        a, b, rewards = run_once(w, clock)
        prep.append(a)
        score.append(b)
    prep_s, score_s = statistics.median(prep), statistics.median(score)
    result = {
        "questions": len(w.problems),
        "arm_texts": sum(len(a) for a in w.arms),
        "trajectories": n_traj,
        "chars_mean": statistics.fmean(chars),
        "chars_min": min(chars),
        "chars_max": max(chars),
        "repeats": args.repeats,
        "prepare_s_median": prep_s,
        "score_s_median": score_s,
        "score_traj_per_s": n_traj / score_s,
        "prepare_plus_score_traj_per_s": n_traj / (prep_s + score_s),
        "prepare_ms_per_question": 1000 * prep_s / len(w.problems),
        "mean_reward": statistics.fmean(rewards),
        "source": "gsm8k" if args.gsm8k else "synthetic",
        "clock": args.clock,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    rows = [
        ("trajectories", f"{n_traj:,} over {len(w.problems)} questions (8 arm texts each)"),
        ("chars / trajectory", f"mean {result['chars_mean']:.0f} (min {min(chars)}, max {max(chars)})"),
        ("prepare arms (median)", f"{prep_s * 1000:.1f} ms  ({result['prepare_ms_per_question']:.3f} ms/question)"),
        ("score (median)", f"{score_s * 1000:.1f} ms"),
        ("score throughput", f"{result['score_traj_per_s']:,.0f} trajectories/s/core"),
        ("prepare+score", f"{result['prepare_plus_score_traj_per_s']:,.0f} trajectories/s/core"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run_once(w)
        prof.disable()
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
