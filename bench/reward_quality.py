"""Real-solution check of the label-free Regime W signal: ``s_wm`` against counting votes.

Data: the ``reward_dev`` set (GSM8K test questions, each with the greedy solutions of 13 real chat
models, every solution labelled correct or wrong against the gold). Protocol (the data set's README):
for each solution, the other solutions of the same question are the arm outputs — at most one text
per arm name, so ``min(8, N-1)`` of the other ``N-1`` (seeded choice) — the gold answer is left out,
and the solution is scored by the service's own scorer, in process. The control is the vote: how
many of the SAME arm texts give the solution's answer. Metrics:

* ``pairwise``  — over every (correct, wrong) pair of solutions of one question: the share the
  score orders right, ties one half (pooled over questions);
* ``auroc``     — pooled over all solutions: P(score of a correct > score of a wrong), ties half;
* ``best_of_n`` — per question, accuracy of the top-scored solution (ties: the expected accuracy of
  a uniform pick among the tied);

with ``--per-question 13`` (every solution) and ``--per-question 4`` (4 solutions drawn per
question, ``--draws`` times, averaged: fewer votes, so more ties for the vote to leave open). The
differences ``s_wm − vote`` carry a standard error from a bootstrap over questions.

    python bench/reward_quality.py --data path/to/zeroeval_gsm8k_dev.jsonl --write-doc docs/reward-quality.md
    python bench/reward_quality.py --data ... --config path/to/regime_w.toml --json out.json

``--write-doc`` rewrites the measured block of the page and keeps the hand-written text after the
notes marker (the before/after record of formula changes lives there).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reward_service.regime_w.config import RegimeWConfig, default_config, load_config
from reward_service.regime_w.scorer import ArmText, prepare_arms, score_trajectory
from shared_schemas.answer import answers_equal, parse_answer

NOTES_MARKER = "<!-- notes: kept when the page is regenerated -->"
SCORES = ("s_wm", "vote", "s_end", "s_path", "s_cf")


@dataclass(frozen=True, slots=True)
class Solution:
    model: str
    text: str
    correct: bool


@dataclass(frozen=True, slots=True)
class Question:
    question: str
    solutions: tuple[Solution, ...]


@dataclass(frozen=True, slots=True)
class Scored:
    """One solution's label and its scores, keyed by name (``SCORES``)."""

    correct: bool
    scores: dict[str, float]


def load_questions(path: Path) -> list[Question]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            sols = tuple(Solution(s["model"], s["text"], bool(s["correct"])) for s in row["samples"])
            out.append(Question(row["question"], sols))
    return out


def arm_order(config: RegimeWConfig) -> list[str]:
    """Arm names interleaved across families (compute, reflective, compute, ...), so that with fewer
    texts than arms every family present still gets one and ``s_cf`` means what it says."""
    by_family = [[a.name for a in config.arms if a.family == f] for f in config.families]
    out: list[str] = []
    for i in range(max(len(names) for names in by_family)):
        out.extend(names[i] for names in by_family if i < len(names))
    return out


def score_question(q: Question, picked: Sequence[int], config: RegimeWConfig, rng: random.Random) -> list[Scored]:
    """Score each picked solution label-free against ``min(len(arms), N-1)`` of the other picked ones."""
    names = arm_order(config)
    answers = {i: parse_answer(q.solutions[i].text).value for i in picked}
    out = []
    for i in picked:
        others = [j for j in picked if j != i]
        chosen = rng.sample(others, min(len(names), len(others)))
        arm_texts = [ArmText(arm=names[a], text=q.solutions[j].text) for a, j in enumerate(chosen)]
        arms = prepare_arms(q.question, arm_texts, config)
        s = score_trajectory(q.solutions[i].text, 0, arms, config, gold=None)
        mine = answers[i]
        vote = 0.0 if mine is None else float(sum(answers_equal(mine, answers[j]) for j in chosen))
        scores = {"s_wm": s.s_wm, "vote": vote, "s_end": s.s_end, "s_path": s.s_path, "s_cf": s.s_cf}
        out.append(Scored(q.solutions[i].correct, scores))
    return out


# --- metrics ------------------------------------------------------------------------------------


def pairwise_counts(group: Sequence[Scored], key: str) -> tuple[float, int]:
    """(pairs ordered right, ties one half; number of correct/wrong pairs) within one question."""
    pos = [g.scores[key] for g in group if g.correct]
    neg = [g.scores[key] for g in group if not g.correct]
    right = 0.0
    for p in pos:
        for n in neg:
            right += 1.0 if p > n else 0.5 if p == n else 0.0
    return right, len(pos) * len(neg)


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """P(score of a positive > score of a negative), ties one half (mid-ranks)."""
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes")
    order = sorted(range(len(scores)), key=lambda k: scores[k])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def best_of_n(group: Sequence[Scored], key: str) -> float:
    """Expected accuracy of the top-scored solution (uniform pick among ties)."""
    top = max(g.scores[key] for g in group)
    tied = [g for g in group if g.scores[key] == top]
    return sum(g.correct for g in tied) / len(tied)


def mixed_top(group: Sequence[Scored], key: str) -> bool:
    """Whether the top score is shared by a correct and a wrong solution (the pick is a coin toss)."""
    top = max(g.scores[key] for g in group)
    return len({g.correct for g in group if g.scores[key] == top}) == 2


def metrics(groups: Sequence[Sequence[Scored]], key: str) -> dict[str, float]:
    right = pairs = 0.0
    for g in groups:
        r, p = pairwise_counts(g, key)
        right += r
        pairs += p
    flat = [s for g in groups for s in g]
    return {
        "pairwise": right / pairs,
        "auroc": auroc([s.scores[key] for s in flat], [s.correct for s in flat]),
        "best_of_n": statistics.fmean(best_of_n(g, key) for g in groups),
    }


def bootstrap_se(groups: Sequence[Sequence[Scored]], a: str, b: str, reps: int, seed: int) -> dict[str, float]:
    """Standard error of ``metric(a) − metric(b)`` (pairwise, best-of-N) from resampling questions."""
    rng = random.Random(seed)
    per_q = [(pairwise_counts(g, a), pairwise_counts(g, b), best_of_n(g, a) - best_of_n(g, b)) for g in groups]
    diffs_pw, diffs_bo = [], []
    for _ in range(reps):
        sample = [per_q[rng.randrange(len(per_q))] for _ in per_q]
        pairs = sum(x[0][1] for x in sample)
        if pairs:
            diffs_pw.append((sum(x[0][0] for x in sample) - sum(x[1][0] for x in sample)) / pairs)
        diffs_bo.append(statistics.fmean(x[2] for x in sample))
    return {"pairwise": statistics.pstdev(diffs_pw), "best_of_n": statistics.pstdev(diffs_bo)}


# --- the runs -----------------------------------------------------------------------------------


def run_setting(
    questions: Sequence[Question],
    config: RegimeWConfig,
    per_question: int,
    draws: int,
    seed: int,
    reps: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Every metric for every score, averaged over ``draws`` draws of ``per_question`` solutions."""
    runs: list[dict[str, Any]] = []
    draws = 1 if per_question >= max(len(q.solutions) for q in questions) else draws
    for d in range(draws):
        rng = random.Random(f"{seed}:{per_question}:{d}")
        groups: list[list[Scored]] = []
        started = time.monotonic()
        for qi, q in enumerate(questions):
            n = min(per_question, len(q.solutions))
            picked = sorted(rng.sample(range(len(q.solutions)), n))
            groups.append(score_question(q, picked, config, rng))
            if (qi + 1) % 200 == 0:
                progress(
                    f"  N={per_question} draw {d + 1}/{draws}: {qi + 1}/{len(questions)} questions "
                    f"({time.monotonic() - started:.0f} s)"
                )
        res: dict[str, Any] = {key: metrics(groups, key) for key in SCORES}
        res["se_s_wm_minus_vote"] = bootstrap_se(groups, "s_wm", "vote", reps, seed + d)
        flat = [s for g in groups for s in g]
        res["solutions"] = len(flat)
        res["correct_share"] = sum(s.correct for s in flat) / len(flat)
        res["mixed_questions"] = sum(1 for g in groups if 0 < sum(s.correct for s in g) < len(g))
        res["oracle_best_of_n"] = statistics.fmean(float(any(s.correct for s in g)) for g in groups)
        res["vote_ties_at_top"] = statistics.fmean(float(mixed_top(g, "vote")) for g in groups)
        res["s_wm_ties_at_top"] = statistics.fmean(float(mixed_top(g, "s_wm")) for g in groups)
        runs.append(res)
    out: dict[str, Any] = {"per_question": per_question, "draws": draws}
    for key in SCORES:
        out[key] = {m: statistics.fmean(r[key][m] for r in runs) for m in ("pairwise", "auroc", "best_of_n")}
    out["se_s_wm_minus_vote"] = {
        m: statistics.fmean(r["se_s_wm_minus_vote"][m] for r in runs) / max(1, draws) ** 0.5
        for m in ("pairwise", "best_of_n")
    }
    for k in (
        "solutions",
        "correct_share",
        "mixed_questions",
        "oracle_best_of_n",
        "vote_ties_at_top",
        "s_wm_ties_at_top",
    ):
        out[k] = statistics.fmean(r[k] for r in runs)
    return out


def format_table(results: Sequence[dict[str, Any]]) -> str:
    lines = ["| solutions / question | score | pairwise | AUROC | best-of-N |", "| ---: | --- | ---: | ---: | ---: |"]
    for res in results:
        for key in SCORES:
            m = res[key]
            name = f"**{key}**" if key == "s_wm" else key
            lines.append(
                f"| {res['per_question']} | {name} | {m['pairwise']:.4f} | {m['auroc']:.4f} | "
                f"{100 * m['best_of_n']:.2f}% |"
            )
    lines.append("")
    lines.append(
        "| solutions / question | draws | s_wm − vote, pairwise (± SE) | s_wm − vote, best-of-N (± SE) | "
        "mixed questions | top tie of right and wrong: vote / s_wm | oracle best-of-N |"
    )
    lines.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for res in results:
        se = res["se_s_wm_minus_vote"]
        dpw = res["s_wm"]["pairwise"] - res["vote"]["pairwise"]
        dbo = res["s_wm"]["best_of_n"] - res["vote"]["best_of_n"]
        lines.append(
            f"| {res['per_question']} | {res['draws']} | {dpw:+.4f} ± {se['pairwise']:.4f} | "
            f"{100 * dbo:+.2f} ± {100 * se['best_of_n']:.2f} pts | {res['mixed_questions']:.0f} | "
            f"{100 * res['vote_ties_at_top']:.1f}% / {100 * res['s_wm_ties_at_top']:.1f}% | {100 * res['oracle_best_of_n']:.2f}% |"
        )
    return "\n".join(lines)


def write_doc(page: Path, results: Sequence[dict[str, Any]], meta: dict[str, Any], command: str) -> None:
    head = (
        "# Reward quality on real solutions (label-free `s_wm` vs counting votes)\n\n"
        f"`bench/reward_quality.py` on `reward_dev/zeroeval_gsm8k_dev.jsonl` ({meta['questions']} GSM8K test "
        "questions × 13 real chat-model solutions, labelled against the gold). Each solution is scored by the "
        "service's scorer in process, **label-free** (no gold), with `min(8, N−1)` of the other solutions of its "
        "question as the arm outputs (one per arm name, arm names interleaved across the two families); `vote` "
        "counts how many of those same texts give its answer. `pairwise`: share of (correct, wrong) pairs of one "
        "question ordered right (ties ½); `AUROC`: pooled; `best-of-N`: accuracy of the top-scored solution per "
        "question (ties: expected value of a uniform pick). SE: bootstrap over questions "
        f"({meta['reps']} resamples).\n\n"
        f"Scorer config: `{meta['config']}` (fingerprint `{meta['fingerprint'][:19]}…`). "
        f"Measured in {meta['seconds']:.0f} s.\n\n"
    )
    body = head + format_table(results) + f"\n\nReproduce:\n\n```bash\n{command}\n```\n"
    if page.is_file():
        old = page.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            body += "\n" + NOTES_MARKER + old.split(NOTES_MARKER, 1)[1]
    page.write_text(body, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="zeroeval_gsm8k_dev.jsonl (reward_dev)")
    parser.add_argument("--config", type=Path, default=None, help="scorer config TOML (default: the packaged one)")
    parser.add_argument(
        "--path-reference",
        choices=("all", "gold", "supporting"),
        default=None,
        help="override [path] reference of the config (label-free here: gold = all)",
    )
    parser.add_argument("--question-numbers", type=float, default=None, help="override [path] question_numbers (mu)")
    parser.add_argument(
        "--lambdas",
        type=float,
        nargs=3,
        default=None,
        metavar=("END", "PATH", "CF"),
        help="override [coherence] lambda_end lambda_path lambda_cf",
    )
    parser.add_argument(
        "--per-question", type=int, nargs="+", default=[13, 4], help="solutions per question (default: 13 4)"
    )
    parser.add_argument("--draws", type=int, default=3, help="draws of the subset when fewer than all (default 3)")
    parser.add_argument("--questions", type=int, default=0, help="use only the first N questions (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the SE")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here")
    parser.add_argument("--write-doc", type=Path, default=None, help="(re)write this markdown page")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        parser.error(f"--data {args.data}: no such file")
    config = load_config(args.config) if args.config else default_config()
    changes: dict[str, Any] = {}
    if args.path_reference is not None:
        changes["path_reference"] = args.path_reference
    if args.question_numbers is not None:
        changes["path_question_numbers"] = args.question_numbers
    if args.lambdas is not None:
        changes.update(lambda_end=args.lambdas[0], lambda_path=args.lambdas[1], lambda_cf=args.lambdas[2])
    if changes:  # a variant of the config: its own (made-up) fingerprint, so it is never mistaken for the file
        label = ",".join(f"{k}={v}" for k, v in sorted(changes.items()))
        config = dataclasses.replace(config, fingerprint=f"variant:{label}", **changes)
    questions = load_questions(args.data)
    if args.questions:
        questions = questions[: args.questions]
    started = time.monotonic()

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    results = [run_setting(questions, config, n, args.draws, args.seed, args.bootstrap, say) for n in args.per_question]
    meta = {
        "questions": len(questions),
        "config": (str(args.config.name) if args.config else "default_config.toml")
        + (f" with {', '.join(f'{k} = {v}' for k, v in sorted(changes.items()))}" if changes else ""),
        "fingerprint": config.fingerprint,
        "seconds": time.monotonic() - started,
        "reps": args.bootstrap,
    }
    print(format_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n", encoding="utf-8")
    if args.write_doc is not None:
        argv_text = " ".join(argv if argv is not None else sys.argv[1:])
        argv_text = argv_text.replace(str(args.data), "<reward_dev>/zeroeval_gsm8k_dev.jsonl")
        write_doc(args.write_doc, results, meta, "python bench/reward_quality.py " + argv_text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
