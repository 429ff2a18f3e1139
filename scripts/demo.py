"""The main job, offline on the CPU: the reward service, curl-scoring, and the training loop.

    python scripts/demo.py                 # everything: service + curl, then the toy-world loop
    python scripts/demo.py --service-only  # start the service, curl-score examples/batch.json, stop

The loop (experiments/toy_loop.py) builds the toy base (cached), starts the reward service on it with
arms generated live by the toy model, curl-scores examples/batch.json and a toy item without arm
outputs, runs sft -> rollouts -> prefs -> dpo -> grpo -> eval through the real CLIs and prints the
accuracy table. Each step prints what it runs; the service is always stopped at the end, also on
failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.toy_loop import LoopError, Paths, reward_service, run_toy_loop, write_results_page  # noqa: E402
from shared_schemas.answer import gold_answer  # noqa: E402


def banner(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def curl_score(url: str, key: str, batch: Path) -> dict:
    """Run examples/curl.sh against the service (curl when installed, else the same request with httpx)."""
    print(f"$ REGIME_W_URL={url} REGIME_W_API_KEY=<key> examples/curl.sh {_rel(batch)}", flush=True)
    if shutil.which("curl"):
        out = subprocess.run(
            ["bash", str(ROOT / "examples" / "curl.sh"), str(batch)],
            capture_output=True,
            text=True,
            env={**os.environ, "REGIME_W_URL": url, "REGIME_W_API_KEY": key},
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"curl-scoring failed ({out.returncode}): {out.stdout[-2000:]} {out.stderr[-2000:]}")
        return json.loads(out.stdout)
    r = httpx.post(
        url + "/v1/score",
        content=batch.read_bytes(),
        timeout=300,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    r.raise_for_status()
    return r.json()


def print_scores(response: dict) -> None:
    print(
        f"scorer {response['scorer']['name']} {response['scorer']['version']} "
        f"config {response['scorer']['config_fingerprint'][:19]}… model {response['scorer']['model']}"
    )
    print(
        f"{'item':<18} {'consensus':>9} {'answer':>8} {'correct':>7} {'s_end':>6} {'s_path':>6} "
        f"{'s_cf':>6} {'s_wm':>6} {'reward':>8}"
    )
    for result in response["results"]:
        for s in result["scores"]:
            corr = "-" if s["correctness"] is None else f"{s['correctness']:.0f}"
            print(
                f"{result['id'][:18]:<18} {result['consensus_answer']!s:>9} {s['final_answer']!s:>8} "
                f"{corr:>7} {s['s_end']:>6.3f} {s['s_path']:>6.3f} {s['s_cf']:>6.3f} {s['s_wm']:>6.3f} "
                f"{s['reward']:>8.4f}"
            )


def service_demo(workdir: Path) -> None:
    banner("1. Reward service (backend 'provided': arm texts come with the batch) + curl-score examples/batch.json")
    with reward_service(
        "--backend", "provided", "--cache-path", "none", log_path=workdir / "logs" / "reward-service-provided.log"
    ) as (url, key):
        print_scores(curl_score(url, key, ROOT / "examples" / "batch.json"))


def toy_item(paths: Paths) -> dict:
    """One toy dev problem with two made-up trajectories and NO arm outputs: the service has the toy
    model generate its 8 arms live."""
    problem = json.loads((paths.data / "dev.jsonl").read_text(encoding="utf-8").splitlines()[0])
    gold = gold_answer(problem["answer"])
    if gold is None:
        raise LoopError(f"toy dev problem without a '#### N' answer: {problem['answer'][-80:]!r}")
    right = problem["answer"].split("\n")
    wrong = [*right[:-1], f"#### {int(gold) + 1}"]
    return {
        "items": [
            {
                "id": "toy-dev-0",
                "question": problem["question"],
                "gold_answer": f"#### {gold}",
                "trajectories": ["\n".join(right), "\n".join(wrong)],
            }
        ],
        "return_details": True,
    }


def curl_on_toy_service(url: str, key: str, paths: Paths) -> None:
    """Inside the loop, once the toy-base service is up: curl-score both batches."""
    banner("Curl-scoring the toy-base service: examples/batch.json, then a toy item without arm outputs")
    print_scores(curl_score(url, key, ROOT / "examples" / "batch.json"))
    batch = paths.workdir / "toy_batch.json"
    batch.write_text(json.dumps(toy_item(paths), indent=2), encoding="utf-8")
    print_scores(curl_score(url, key, batch))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "demo", help="where artifacts go")
    parser.add_argument("--service-only", action="store_true", help="only the service + curl-scoring step")
    parser.add_argument("--seed", type=int, default=0, help="training seed of the toy loop")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument(
        "--results-page",
        type=Path,
        default=None,
        help="also write the accuracy table as this markdown page, the chart beside it",
    )
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        service_demo(args.workdir)
    except LoopError as exc:
        print(f"\nthe service demo failed: {exc}", file=sys.stderr)
        return 1
    if not args.service_only:
        banner(
            "2. The toy world: toy base (cached) -> service with live arms -> sft -> rollouts -> prefs "
            "-> dpo -> grpo -> eval"
        )
        try:
            result = run_toy_loop(
                args.workdir / "toy",
                seed=args.seed,
                threads=args.threads,
                base_dir=args.workdir / "toy_base",
                on_service=curl_on_toy_service,
            )
        except LoopError as exc:
            print(f"\nthe toy loop failed: {exc}", file=sys.stderr)
            return 1
        if args.results_page is not None:
            command = "bash scripts/demo.sh" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
            print(f"wrote {write_results_page(result, args.results_page.resolve(), command=command)}")
    print(f"\ndone in {time.monotonic() - started:.0f} s; artifacts under {args.workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
