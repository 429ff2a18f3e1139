"""Does one heavy request stall the others? ``/healthz`` latency while a dense ``/v1/score`` runs.

Starts a real ``regime-w-serve`` (backend ``provided``, no arm cache) and sends it the dense request of
issue 22 item 2: 16 items x 8 client arm texts of 60,000 characters (every arm all equations, each
number a derived quantity to parse) and one 60,000-character trajectory an item. While it is in flight
a second client polls ``GET /healthz`` every ``--every`` seconds; the largest ``/healthz`` latency
seen between the dense request's start and its answer is the figure (a loop that parses on the event
loop answers nothing meanwhile). ``--small`` also times a small request (1 item, 4 trajectories, 8
short arms) back to back, to see what moving the scoring off the loop costs it.

    python3 bench/healthz_under_load.py --out bench/results/healthz_under_load.json
    python3 bench/healthz_under_load.py --checkout <a checkout of an older commit>   # the "before"

``--checkout`` runs the service of another checkout (its ``reward_service`` package, this venv).
The load generator runs on the same cores as the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"
ARMS = [
    "cot_greedy",
    "cot_sampled",
    "equations_first",
    "arithmetic_trace",
    "solve_then_verify",
    "work_backwards",
    "critique_and_revise",
    "teach_and_check",
]


def dense_text(rnd: random.Random, chars: int) -> str:
    parts, n = [], 0
    while n < chars:
        x, y = rnd.randint(1, 99_999), rnd.randint(1, 99_999)
        part = f"{x} + {y} = {x + y}. "
        parts.append(part)
        n += len(part)
    return "".join(parts)[: chars - 8] + "\n#### 72"


def dense_body(items: int, chars: int, seed: int) -> bytes:
    rnd = random.Random(seed)
    out = []
    for i in range(items):
        out.append(
            {
                "id": f"dense-{i}",
                "question": f"Question {i}: Ann has 70 apples and buys 2 more. How many apples?",
                "gold_answer": "72",
                "trajectories": [dense_text(rnd, chars)],
                "num_tokens": [chars // 4],
                "arm_outputs": [{"arm": a, "text": dense_text(rnd, chars)} for a in ARMS],
            }
        )
    return json.dumps({"items": out, "return_details": True}).encode()


def small_body(k: int) -> bytes:
    item = {
        "id": f"small-{k}",
        "question": f"Question {k}: what is 70 + 2?",
        "gold_answer": "72",
        "trajectories": [f"70 + 2 = 72\n#### 72 ({k}, {j})" for j in range(4)],
        "num_tokens": [8, 8, 8, 8],
        "arm_outputs": [{"arm": a, "text": "70 + 2 = 72\n#### 72"} for a in ARMS],
    }
    return json.dumps({"items": [item]}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(checkout: Path, port: int, log: Path, max_body: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REGIME_W_API_KEYS": KEY,
        "REGIME_W_BACKEND": "provided",
        "REGIME_W_CACHE_PATH": "none",
        "REGIME_W_LOG_LEVEL": "warning",
        "REGIME_W_MAX_BODY_BYTES": str(max_body),
        "PYTHONPATH": str(checkout),
    }
    argv = [sys.executable, "-m", "reward_service.cli", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, cwd=checkout, env=env, stdout=f, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"service exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("service not ready")


async def probe_during(url: str, body: bytes, every: float) -> dict:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    latencies: list[float] = []
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as heavy,
        httpx.AsyncClient(base_url=url, timeout=600) as light,
    ):
        done = asyncio.Event()

        async def poll() -> None:
            while not done.is_set():
                t0 = time.perf_counter()
                r = await light.get("/healthz")
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200
                await asyncio.sleep(every)

        poller = asyncio.create_task(poll())
        t0 = time.perf_counter()
        r = await heavy.post("/v1/score", content=body)
        elapsed = time.perf_counter() - t0
        done.set()
        await poller
    if r.status_code != 200:
        raise RuntimeError(f"dense request answered {r.status_code}: {r.text[:300]}")
    return {
        "dense_request_s": elapsed,
        "healthz_polls": len(latencies),
        "healthz_max_s": max(latencies),
        "healthz_p50_s": statistics.median(latencies),
    }


def time_small(url: str, n: int) -> dict:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    lat = []
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        for k in range(n + 20):
            body = small_body(k % 50)  # 50 distinct questions: memo hits after the first round, as in training
            t0 = time.perf_counter()
            r = client.post("/v1/score", content=body)
            if k >= 20:
                lat.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
    lat.sort()
    return {"small_requests": n, "small_p50_ms": lat[n // 2] * 1000, "small_mean_ms": statistics.fmean(lat) * 1000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose service runs (default: this)")
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--chars", type=int, default=60_000)
    ap.add_argument("--every", type=float, default=0.05, help="seconds between /healthz polls")
    ap.add_argument("--repeats", type=int, default=2, help="dense requests, one after the other")
    ap.add_argument("--small", type=int, default=0, help="also time this many small requests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    body = dense_body(args.items, args.chars, args.seed)
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_service(args.checkout.resolve(), port, Path(tmp) / "service.log", max(len(body) * 2, 8 << 20))
        try:
            url = f"http://127.0.0.1:{port}"
            runs = [asyncio.run(probe_during(url, body, args.every)) for _ in range(args.repeats)]
            small = time_small(url, args.small) if args.small else None
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=args.checkout, capture_output=True, text=True
    ).stdout.strip()
    print(
        f"dense request: {args.items} items x 8 arms x {args.chars:,} chars + 1 trajectory each ({len(body):,} bytes)"
    )
    for r in runs:
        print(
            f"  dense {r['dense_request_s']:.2f} s; /healthz max {r['healthz_max_s'] * 1000:.0f} ms, "
            f"median {r['healthz_p50_s'] * 1000:.1f} ms over {r['healthz_polls']} polls"
        )
    if small:
        print(
            f"  small request (1 item, 4 trajectories): p50 {small['small_p50_ms']:.2f} ms, mean {small['small_mean_ms']:.2f} ms"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "benchmark": "healthz_under_load",
            "commit": commit,
            "items": args.items,
            "chars": args.chars,
            "body_bytes": len(body),
            "runs": runs,
            "small": small,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        }
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
