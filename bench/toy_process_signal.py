"""How well each Regime W scorer variant orders toy rollouts by how much of the right path they took.

The toy world knows every problem's true intermediate results (the gold solution's calculator
annotations), so a trajectory's *partial credit* is the share of them it computes. On the rollouts of
one ablation cell (``runs/ablation/seed0/regime_w/rl_rollouts.jsonl``: the SFT policy's 8 samples per
question, the same samples for every reward row) and the arms the service generated for them (the
cell's arm cache), this re-scores every group in process, with gold, under each config and reports

* in the groups where all 8 samples are wrong (correctness gives GRPO no signal there): the share of
  sample pairs with different partial credit that the reward orders the same way (ties one half);
* among the correct samples of a group: the same for the number of gold intermediate results
  (one line per step over folded);
* how many correct samples hold a wrong equation (right answer through a wrong step).

    python bench/toy_process_signal.py --cell runs/ablation/seed0/regime_w --data runs/ablation/data/toy/train.jsonl \\
        --configs reward_service/regime_w/toy_config.toml reward_service/regime_w/toy_variants/*.toml
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from reward_service.arm_cache import cache_key
from reward_service.regime_w.config import load_config
from reward_service.regime_w.derived import scan_equations
from reward_service.regime_w.scorer import ArmText, prepare_arms, score_trajectories
from shared_schemas.answer import answers_equal, parse_answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", type=Path, required=True, help="an ablation cell with rl_rollouts.jsonl")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="its arm cache (default: the toy_config one beside the cell's seed directory)",
    )
    parser.add_argument("--data", type=Path, required=True, help="the toy train.jsonl (gold solutions)")
    parser.add_argument("--configs", type=Path, nargs="+", required=True)
    args = parser.parse_args(argv)
    cache = args.cache or args.cell.parent / "arm_cache-toy_config.sqlite"
    train = [json.loads(line) for line in args.data.read_text(encoding="utf-8").splitlines() if line.strip()]
    db = sqlite3.connect(str(cache))
    model, fingerprint = db.execute("SELECT model, fingerprint FROM arms LIMIT 1").fetchone()
    configs = {p.stem: load_config(p) for p in args.configs}
    records = [
        json.loads(line)
        for line in (args.cell / "rl_rollouts.jsonl").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    wrong_pairs = {k: [0.0, 0] for k in configs}
    right_pairs = {k: [0.0, 0] for k in configs}
    groups_all_wrong = groups_with_arm_right = correct = correct_bad_eq = 0
    for r in records:
        outs = [t["output"] for t in r["trajectories"]]
        tokens = [int(t["num_tokens"]) for t in r["trajectories"]]
        ok = [answers_equal(parse_answer(o).value, r["gold_answer"]) for o in outs]
        gold_steps = scan_equations(train[int(r["id"].rsplit("-", 1)[1])]["answer"]).results
        part = [len(scan_equations(o).results & gold_steps) / len(gold_steps) for o in outs]
        row = db.execute(
            "SELECT payload FROM arms WHERE key = ?", (cache_key(model, fingerprint, r["question"]),)
        ).fetchone()
        if row is None:
            print(f"no arms cached for {r['id']}", file=sys.stderr)
            return 1
        arms = [ArmText(a, t) for a, t in json.loads(row[0])]
        correct += sum(ok)
        correct_bad_eq += sum(1 for o, c in zip(outs, ok) if c and scan_equations(o).validity < 1.0)
        if not any(ok):
            groups_all_wrong += 1
            groups_with_arm_right += any(answers_equal(parse_answer(a.text).value, r["gold_answer"]) for a in arms)
            pairs = [(i, j) for i in range(len(outs)) for j in range(len(outs)) if part[i] > part[j]]
            target = wrong_pairs
        else:
            pairs = [
                (i, j) for i in range(len(outs)) for j in range(len(outs)) if ok[i] and ok[j] and part[i] > part[j]
            ]
            target = right_pairs
        for name, config in configs.items():
            prepared = prepare_arms(r["question"], arms, config)
            rewards = [s.reward for s in score_trajectories(outs, tokens, prepared, config, r["gold_answer"])]
            for i, j in pairs:
                target[name][0] += 1.0 if rewards[i] > rewards[j] else 0.5 if rewards[i] == rewards[j] else 0.0
                target[name][1] += 1
    print(
        f"{len(records)} questions; all 8 samples wrong: {groups_all_wrong} ({groups_with_arm_right} of them with at "
        f"least one arm right); correct samples with a wrong equation: {correct_bad_eq} of {correct}"
    )
    print(
        "| config | all-wrong groups: pairs ordered by partial credit | correct samples: pairs ordered by gold steps |"
    )
    print("| --- | ---: | ---: |")
    print(f"| correctness (any 0/1 reward) | 0.5000 ({wrong_pairs[next(iter(configs))][1]} pairs) | 0.5000 |")
    for name in configs:
        w, c = wrong_pairs[name], right_pairs[name]
        print(f"| {name} | {w[0] / max(1, w[1]):.4f} ({w[1]} pairs) | {c[0] / max(1, c[1]):.4f} ({c[1]} pairs) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
