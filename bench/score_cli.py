"""Throughput of the offline CLI ``regime-w-score`` on a 10,000-trajectory batch (arms in the batch).

Writes the same seeded workload as ``bench/score_inprocess.py`` (100 questions x 100 R1-style
trajectories, 8 arm texts each) as a ScoreRequest JSON file, then times the whole command
(process start, imports, JSON parsing and validation, scoring, printing) ``--repeats`` times.

    python3 bench/score_cli.py --out bench/results/score_cli.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from score_inprocess import build_workload  # noqa: E402


def write_batch(path: Path, questions: int, per_question: int, seed: int) -> int:
    w = build_workload(questions, per_question, seed, None)
    items = [
        {
            "id": f"bench-{i}",
            "question": p.question,
            "gold_answer": p.gold,
            "trajectories": ts,
            "num_tokens": nt,
            "arm_outputs": [{"arm": a.arm, "text": a.text} for a in arms],
        }
        for i, (p, arms, ts, nt) in enumerate(zip(w.problems, w.arms, w.trajectories, w.num_tokens))
    ]
    path.write_text(json.dumps({"items": items, "return_details": True}))
    return sum(len(ts) for ts in w.trajectories)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--per-question", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        batch = Path(tmp) / "batch.json"
        n = write_batch(batch, args.questions, args.per_question, args.seed)
        cmd = [
            sys.executable,
            "-c",
            "from reward_service.cli import score_main; raise SystemExit(score_main())",
            str(batch),
            "--backend",
            "provided",
            "--cache-path",
            "none",
        ]
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - t0)
            assert sum(len(r["scores"]) for r in json.loads(out.stdout)["results"]) == n
        size_mb = batch.stat().st_size / 1e6
    med = statistics.median(times)
    print(
        f"regime-w-score on {n} trajectories ({size_mb:.1f} MB batch, arms in the batch): "
        f"median {med:.2f} s over {args.repeats} runs -> {n / med:,.0f} trajectories/s (whole command)"
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "benchmark": "score_cli",
                    "trajectories": n,
                    "batch_mb": size_mb,
                    "seconds": times,
                    "median_s": med,
                    "trajectories_per_s": n / med,
                    "machine": {
                        "cpus": os.cpu_count(),
                        "platform": platform.platform(),
                        "python": platform.python_version(),
                    },
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
