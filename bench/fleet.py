"""Replicas sharing one PostgreSQL arm store, against the single-host SQLite baseline (issue 23 item 6).

    python bench/fleet.py --replicas 1 2 4 --questions 120 --clients 32 --generation-s 0.2

On loopback: a fake OpenAI-compatible upstream whose every completion takes ``--generation-s``
(``content_override`` + ``override_delay`` of ``tests/support/openai_compat_server.py``), N
``regime-w-serve`` replicas (backend ``openai``) on a fresh PostgreSQL database (or one on a SQLite
file: ``sqlite``), ``--clients`` concurrent clients sending each a one-item ``/v1/score`` round robin
over the replicas. Two phases per setup:

- miss: every question new (each one's arms generated once across the fleet): arm generations
  (questions) per second, request p50/p99;
- hit: the same questions again, then again (served from the replicas' memory or the store):
  scored requests per second, p50/p99.

Database round trips per scored request: the transactions PostgreSQL counted for the bench database
(``pg_stat_database.xact_commit + xact_rollback``: every store call is one transaction) over the
requests of the phase. Prints a Markdown table; the figures in docs/performance.md come from it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.openai_compat_server import running_server  # noqa: E402
from tests.support.postgres import ADMIN_DB, create_database, drop_database, url  # noqa: E402
from tests.support.tiny_model import build_tiny_model  # noqa: E402
from tests.test_fleet import ARM_TEXT, KEY, SERVED, UPSTREAM_KEY, control, item, replica_env, replicas  # noqa: E402


def xacts(database: str) -> int:
    import psycopg

    with psycopg.connect(url(ADMIN_DB), autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (database,)
        ).fetchone()
    return int(row[0]) if row else 0


async def phase(servers: list, questions: list[str], clients: int) -> tuple[float, list[float], int]:
    """Wall seconds, per-request latencies, and the count of non-200 answers."""
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for i, q in enumerate(questions):
        queue.put_nowait((i, q))

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            i, q = queue.get_nowait()
            server = servers[i % len(servers)]
            t0 = time.perf_counter()
            r = await c.post(
                server.url + "/v1/score", json={"items": [item(q)]}, headers={"Authorization": f"Bearer {KEY}"}
            )
            latencies.append(time.perf_counter() - t0)
            errors += r.status_code != 200

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=clients)) as c:
        await asyncio.gather(*(client(c) for _ in range(clients)))
    return time.perf_counter() - started, latencies, errors


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000


def run_setup(kind: str, n: int, upstream: str, args: argparse.Namespace, tmp: Path) -> list[str]:
    database = create_database() if kind == "postgres" else None
    cache_url = url(database) if database else f"sqlite:///{tmp / f'arms-{n}.sqlite3'}"
    env = replica_env(tmp, upstream, cache_url, REGIME_W_LOG_LEVEL="warning")
    rows = []
    try:
        with replicas(n, env) as servers:
            tag = f"{time.time_ns()}"
            questions = [
                f"Bench {tag} question {i}: a shop sells {i} pens and {i + 3} pencils. How many?"
                for i in range(args.questions)
            ]
            for name, qs in (("miss", questions), ("hit", questions * 2)):
                before = xacts(database) if database else 0
                wall, lat, errors = asyncio.run(phase(servers, qs, args.clients))
                trips = (xacts(database) - before) / len(qs) if database else float("nan")
                rate = len(qs) / wall
                rows.append(
                    f"| {kind} | {n} | {name} | {len(qs)} | {rate:.1f} | {pct(lat, 50):.0f} | {pct(lat, 99):.0f} | "
                    + ("-" if database is None else f"{trips:.2f}")
                    + f" | {errors} |"
                )
                print(rows[-1], flush=True)
    finally:
        if database:
            drop_database(database)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--questions", type=int, default=120)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--generation-s", type=float, default=0.2, help="seconds each upstream completion takes")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = build_tiny_model(tmp / "tiny")
        with running_server(model, "--api-key", UPSTREAM_KEY, "--served-model-name", SERVED) as upstream:
            control(upstream, content_override=[ARM_TEXT], override_delay=args.generation_s)
            print(
                f"cores: {os.cpu_count()}; each upstream completion takes {args.generation_s:g} s; {args.clients} clients"
            )
            print(
                "| store | replicas | phase | requests | per s (miss: questions generated) | p50 ms | p99 ms | DB round trips / request | non-200 |"
            )
            print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
            run_setup("sqlite", 1, upstream, args, tmp)
            for n in args.replicas:
                run_setup("postgres", n, upstream, args, tmp)


if __name__ == "__main__":
    main()
