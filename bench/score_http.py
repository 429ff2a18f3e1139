"""Scoring over HTTP on loopback (DESIGN §7: >= 5,000 trajectories/s, p99 < 100 ms at 8 clients).

Starts a real ``regime-w-serve`` (backend ``provided``) whose arm cache was filled beforehand with
the arms of every question, so requests carry no arm texts ("arms cached", as in training), then
drives it with 1/8/32 concurrent clients, each sending batches of 64 trajectories (one question,
``num_tokens`` given) back to back for ``--duration`` seconds. Prints throughput and p50/p99
latency per level and writes JSON.

    python3 bench/score_http.py --out bench/results/score_http.json
    python3 bench/score_http.py --workers 2 --clients 8 --duration 20

The load generator (httpx, asyncio) runs on the same 2 cores as the server, so the figures are a
floor for a deployment with a separate client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from score_inprocess import build_workload  # noqa: E402

from experiments.toy_loop import reward_service  # noqa: E402
from reward_service.arm_cache import ArmCache, cache_key  # noqa: E402
from reward_service.regime_w.config import default_config  # noqa: E402

KEY = "bench-key-0123456789abcdef"


def fill_cache(path: Path, workload) -> None:  # type: ignore[no-untyped-def]
    config = default_config()
    cache = ArmCache(path, memory_items=0)
    cache.put_many(
        (cache_key("provided", config.fingerprint, p.question), "provided", config.fingerprint, arms)
        for p, arms in zip(workload.problems, workload.arms)
    )
    cache.close()


def request_bodies(workload) -> list[bytes]:  # type: ignore[no-untyped-def]
    bodies = []
    for i, (p, ts, nt) in enumerate(zip(workload.problems, workload.trajectories, workload.num_tokens)):
        item = {"id": f"bench-{i}", "question": p.question, "gold_answer": p.gold, "trajectories": ts, "num_tokens": nt}
        bodies.append(json.dumps({"items": [item], "return_details": True}).encode())
    return bodies


async def drive(url: str, bodies: list[bytes], per_request: int, clients: int, duration: float, warmup: float) -> dict:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + duration

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    r = await client.post("/v1/score", content=bodies[i % len(bodies)])
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= stop_at:
                    if ok:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1
                i += clients

        await asyncio.gather(*(worker(k) for k in range(clients)))
    lat = sorted(latencies)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    return {
        "clients": clients,
        "requests": len(lat),
        "errors": errors,
        "trajectories_per_s": len(lat) * per_request / duration,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--batch", type=int, default=64, help="trajectories per request")
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per level")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--workers", type=int, default=1, help="uvicorn workers of the service")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    workload = build_workload(args.questions, args.batch, args.seed, None)
    bodies = request_bodies(workload)
    with tempfile.TemporaryDirectory() as tmp:
        cache_path = Path(tmp) / "arms.sqlite3"
        fill_cache(cache_path, workload)
        env = {
            "REGIME_W_API_KEYS": KEY,
            "REGIME_W_CACHE_PATH": str(cache_path),
            "REGIME_W_LOG_LEVEL": "warning",
            "REGIME_W_WORKERS": str(args.workers),
        }
        with reward_service(
            "--backend",
            "provided",
            log_path=Path(tmp) / "service.log",
            env={**os.environ, **env},
            ready_timeout_s=120,
            say=lambda _: None,
            api_key=KEY,
        ) as (url, _key):
            rows = [asyncio.run(drive(url, bodies, args.batch, c, args.duration, args.warmup)) for c in args.clients]
    print(
        f"scoring over HTTP: {args.batch} trajectories/request, arms cached, {args.workers} worker(s), "
        f"{os.cpu_count()} cores, {args.duration:g} s per level"
    )
    print(f"{'clients':>7} {'traj/s':>9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for r in rows:
        print(
            f"{r['clients']:>7} {r['trajectories_per_s']:>9.0f} {r['requests'] / args.duration:>7.1f} "
            f"{r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['errors']:>6}"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "benchmark": "score_http",
                    "batch": args.batch,
                    "workers": args.workers,
                    "duration_s": args.duration,
                    "machine": {
                        "cpus": os.cpu_count(),
                        "platform": platform.platform(),
                        "python": platform.python_version(),
                    },
                    "levels": rows,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
