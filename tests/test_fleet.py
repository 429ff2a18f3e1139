"""The reward service past one machine (issue 23): N ``regime-w-serve`` processes share one arm store.

Real processes on loopback: replicas of ``regime-w-serve`` (backend ``openai``), a fake
OpenAI-compatible upstream that counts its completions (``tests/support/openai_compat_server.py``),
and the machine's real PostgreSQL (a fresh database per test). What is checked:

- 3 replicas, 50 concurrent clients, 200 new questions each sent to every replica at once: each
  question's arms are generated once across the fleet (completions = 200 x one question's);
- a replica SIGKILLed in the middle of generating: its questions finish on another replica after
  the lease, no request answers a 5xx other than 503/504 with ``Retry-After``, no torn row;
- PostgreSQL restarted under load (a throwaway cluster of its own, so other tests keep theirs):
  503 ``store_unavailable`` with ``Retry-After`` meanwhile, 200 again after, every answered question
  in the store; PostgreSQL unreachable at start: ``/readyz`` 503 while the load is retried, ready
  once it answers;
- a question precomputed with the CLI (or through one replica) while the service runs is found
  inside a wrapped prompt by every running replica without generating (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from reward_service.store import PostgresArmStore
from tests.support.limits import HANG_GUARD_S, wait_for
from tests.support.openai_compat_server import control, running_server, stats
from tests.support.postgres import fresh_database
from tests.support.postgres import url as pg_url
from tests.support.servers import ServerProcess, free_port, wait_until_ready
from tests.support.service_config import small_service_config

ROOT = Path(__file__).resolve().parents[1]
SERVED = "tiny-llama"
UPSTREAM_KEY = "upstream-key-0123456789"
KEY = "fleet-test-key-0123456789"
ARM_TEXT = "6 * 2 = 12\n#### 12"
LEASE_S = 3.0


def item(question: str) -> dict[str, Any]:
    return {"id": "q", "question": question, "trajectories": ["6 * 2 = 12\n#### 12"], "num_tokens": [6]}


def wrapped(question: str) -> str:
    """The question in a chat template with a known instruction (``reward_service.question_index``)."""
    return f"<|user|>{question}\nLet's think step by step.<|end|>\n<|assistant|>"


# ----------------------------------------------------------------- the upstream and the replicas


@pytest.fixture(scope="module")
def upstream(tiny_model_dir: Path) -> Iterator[str]:
    with running_server(tiny_model_dir, "--api-key", UPSTREAM_KEY, "--served-model-name", SERVED) as base_url:
        control(base_url, content_override=[ARM_TEXT])
        yield base_url


def completions(base_url: str) -> int:
    return len(stats(base_url)["completions"])


def replica_env(tmp: Path, upstream: str, cache_url: str, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "REGIME_W_API_KEYS": KEY,
        "REGIME_W_BACKEND": "openai",
        "REGIME_W_OPENAI_BASE_URL": upstream,
        "REGIME_W_OPENAI_API_KEY": UPSTREAM_KEY,
        "REGIME_W_MODEL": SERVED,
        "REGIME_W_CONFIG_PATH": str(small_service_config(tmp, max_tokens=3)),
        "REGIME_W_CACHE_URL": cache_url,
        "REGIME_W_CACHE_POLL_S": "0.5",
        "REGIME_W_CACHE_CLAIM_LEASE_S": str(LEASE_S),
        **more,
    }


@contextlib.contextmanager
def replicas(n: int, env: dict[str, str], *, ready: bool = True) -> Iterator[list[ServerProcess]]:
    """``n`` ``regime-w-serve`` processes started together; waited on until ready when ``ready``."""
    started: list[tuple[ServerProcess, Any]] = []
    try:
        for _ in range(n):
            port = free_port()
            log = tempfile.NamedTemporaryFile(prefix="replica-", suffix=".log", delete=False)  # noqa: SIM115
            argv = [sys.executable, "-m", "reward_service.cli", "--host", "127.0.0.1", "--port", str(port)]
            proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            server = ServerProcess(proc, f"http://127.0.0.1:{port}", Path(log.name))
            server.api_key = KEY
            started.append((server, log))
        if ready:
            for server, _ in started:
                wait_until_ready(server)
        yield [s for s, _ in started]
    finally:
        for server, log in started:
            server.stop()
            log.close()
            with contextlib.suppress(OSError):
                os.unlink(log.name)


def score(client: httpx.Client, server: ServerProcess, question: str) -> httpx.Response:
    return client.post(server.url + "/v1/score", json={"items": [item(question)]}, headers=server.headers)


def check_answer(r: httpx.Response) -> str:
    """200, or one of the documented transient 5xx with ``Retry-After``; never another 5xx."""
    if r.status_code == 200:
        return "ok"
    body = r.json()
    assert r.status_code in (503, 504), (r.status_code, r.text)
    assert int(r.headers["Retry-After"]) >= 1, r.headers
    assert body["error"]["code"] in {"store_unavailable", "generation_timeout", "overloaded", "not_ready"}, body
    return body["error"]["code"]


def indexed(server: ServerProcess) -> float:
    for line in httpx.get(server.url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("regime_w_arm_questions_indexed "):
            return float(line.split()[-1])
    raise AssertionError("no regime_w_arm_questions_indexed in /metrics")


def per_question(upstream: str, servers: list[ServerProcess]) -> int:
    """Completions one new question costs (the arms of the config), measured through the fleet."""
    before = completions(upstream)
    with httpx.Client(timeout=HANG_GUARD_S) as client:
        assert score(client, servers[0], f"How many legs do {uuid.uuid4().hex} spiders have in all?").status_code == 200
    cost = completions(upstream) - before
    assert cost > 0
    return cost


def store_check(cache_url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "reward_service.cache_cli", "check", cache_url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=HANG_GUARD_S,
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------- item 3: one generation per question


def test_three_replicas_generate_each_question_once(upstream: str, tmp_path: Path) -> None:
    with fresh_database() as cache_url, replicas(3, replica_env(tmp_path, upstream, cache_url)) as servers:
        cost = per_question(upstream, servers)
        before = completions(upstream)
        questions = [f"Question {i}: a farmer has {i} cows and buys {i + 7} more. How many now?" for i in range(200)]
        jobs = [(q, s) for q in questions for s in servers]  # every question to every replica, at once

        async def run() -> list[httpx.Response]:
            limit = asyncio.Semaphore(50)  # 50 concurrent clients
            async with httpx.AsyncClient(timeout=HANG_GUARD_S) as client:

                async def one(question: str, server: ServerProcess) -> httpx.Response:
                    async with limit:
                        body = {"items": [item(question)]}
                        return await client.post(server.url + "/v1/score", json=body, headers=server.headers)

                return await asyncio.gather(*(one(q, s) for q, s in jobs))

        answers = asyncio.run(run())
        assert [r.status_code for r in answers] == [200] * len(jobs), [r.text for r in answers if r.status_code != 200]
        assert completions(upstream) - before == 200 * cost  # each question generated once across the fleet
        report = store_check(cache_url)
        assert report["ok"] and report["verified"] == 201 and report["orphan_questions"] == 0, report


def test_a_replica_killed_while_generating_is_taken_over(upstream: str, tmp_path: Path) -> None:
    marker = f"HANG{uuid.uuid4().hex[:8]}"
    questions = [f"{marker} question {i}: how many eggs do {i + 3} hens lay in a week?" for i in range(4)]
    with fresh_database() as cache_url, replicas(2, replica_env(tmp_path, upstream, cache_url)) as (a, b):
        control(upstream, hang_on=marker)
        results: dict[str, list[str]] = {"a": [], "b": []}

        def client(server: ServerProcess, name: str) -> None:
            with httpx.Client(timeout=HANG_GUARD_S) as c:
                for q in questions:
                    try:
                        results[name].append(check_answer(score(c, server, q)))
                    except httpx.TransportError:
                        results[name].append("killed")  # the request was in the replica that died
                    except BaseException as exc:  # an answer check failed: reported by the asserts below
                        results[name].append(repr(exc))

        to_a = threading.Thread(target=client, args=(a, "a"))
        to_a.start()
        wait_for(lambda: stats(upstream)["hanging"] > 0, "replica A generating (its completions held)")
        to_b = threading.Thread(target=client, args=(b, "b"))
        to_b.start()
        time.sleep(0.5)  # B's requests reach B and find A's claims (the result does not depend on it)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=HANG_GUARD_S)
        control(upstream, hang_on="")  # the upstream lets go; A's answers go nowhere
        to_a.join(timeout=HANG_GUARD_S)
        to_b.join(timeout=HANG_GUARD_S)  # B waits for A's claims to expire, then generates them
        assert len(results["b"]) == len(questions), results
        assert results["a"] and set(results["a"]) <= {"killed"}
        assert all(code in {"ok", "generation_timeout"} for code in results["b"]), results["b"]
        with httpx.Client(timeout=HANG_GUARD_S) as c:  # everything B was asked is now served
            for q in questions:
                r = score(c, b, q)
                assert r.status_code == 200 and r.json()["results"][0]["arms_from_cache"], r.text
        store = PostgresArmStore(cache_url)
        try:
            assert {r.question for r in store.rows()} >= set(questions)
        finally:
            store.close()
        report = store_check(cache_url)
        assert report["ok"] and report["bad_payload"] == 0 and report["orphan_questions"] == 0, report
        assert "took over a question" in b.log()


# ----------------------------------------------------------------- item 3: PostgreSQL restarted, or down at start


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[tuple[str, int]]:
    """A throwaway PostgreSQL 15 cluster on a free port (trust auth on loopback), dropped afterwards:
    restarting it leaves the machine's main cluster, which other tests use, alone."""
    if shutil.which("pg_createcluster") is None or os.geteuid() != 0:
        why = "restarting PostgreSQL needs pg_createcluster (postgresql-common) and root"
        if os.environ.get("REGIME_W_REQUIRE_POSTGRES") == "1":
            pytest.fail(why)
        pytest.skip(why)
    name, port = f"regimew_{uuid.uuid4().hex[:8]}", free_port()
    subprocess.run(
        ["pg_createcluster", "15", name, "--port", str(port), "--", "--auth=trust"],
        check=True,
        capture_output=True,
        timeout=HANG_GUARD_S,
    )
    try:
        pg_ctl(name, "start")
        yield name, port
    finally:
        subprocess.run(["pg_dropcluster", "15", name, "--stop"], capture_output=True, timeout=HANG_GUARD_S)


def pg_ctl(name: str, action: str) -> None:
    subprocess.run(["pg_ctlcluster", "15", name, action], check=True, capture_output=True, timeout=HANG_GUARD_S)


def test_postgres_restarted_under_load(upstream: str, tmp_path: Path, own_cluster: tuple[str, int]) -> None:
    name, port = own_cluster
    cache_url = pg_url("postgres", port=port)
    with replicas(2, replica_env(tmp_path, upstream, cache_url)) as servers:
        answered: dict[str, str] = {}  # question -> the code of its last answer
        codes: list[str] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def load(worker: int) -> None:
            try:
                run_load(worker)
            except BaseException as exc:  # reported by the waits below, not lost with the thread
                failures.append(exc)

        def progress(condition: Callable[[], bool]) -> Callable[[], bool]:
            def check() -> bool:
                if failures:
                    raise AssertionError(f"a load thread failed: {failures[0]!r}") from failures[0]
                return condition()

            return check

        def run_load(worker: int) -> None:
            with httpx.Client(timeout=HANG_GUARD_S) as c:
                n = 0
                while not stop.is_set():
                    n += 1
                    q = f"Worker {worker} question {n}: a box holds {n} apples and {worker} pears. How many fruits?"
                    code = check_answer(score(c, servers[n % 2], q))
                    codes.append(code)
                    answered[q] = code
                    if n % 3 == 0 and answered:  # and a question answered before, now a memory hit
                        codes.append(check_answer(score(c, servers[0], next(iter(answered)))))

        workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
        for w in workers:
            w.start()
        wait_for(progress(lambda: codes.count("ok") >= 20), "answers before the restart")
        pg_ctl(name, "stop")
        wait_for(progress(lambda: "store_unavailable" in codes[-20:]), "503 store_unavailable while PostgreSQL is down")
        pg_ctl(name, "start")
        seen = len(codes)
        wait_for(progress(lambda: codes[seen:].count("ok") >= 20), "answers again after the restart")
        stop.set()
        for w in workers:
            w.join(timeout=HANG_GUARD_S)
        assert not failures, failures
        assert "store_unavailable" in codes and codes[-1] == "ok"
        ok = {q for q, code in answered.items() if code == "ok"}
        store = PostgresArmStore(cache_url)
        try:  # nothing lost: every question answered 200 has its arms and question row in the store
            stored = {r.question for r in store.rows()}
        finally:
            store.close()
        assert ok <= stored, sorted(ok - stored)[:3]
        report = store_check(cache_url)
        assert report["ok"] and report["orphan_questions"] == 0, report
        for s in servers:
            assert "Traceback" not in s.log() and "relation" not in s.log()


def test_postgres_unreachable_at_start_is_retried_like_a_backend(
    upstream: str, tmp_path: Path, own_cluster: tuple[str, int]
) -> None:
    name, port = own_cluster
    pg_ctl(name, "stop")
    env = replica_env(
        tmp_path,
        upstream,
        pg_url("postgres", port=port),
        REGIME_W_BACKEND_LOAD_ATTEMPTS="1000",
        REGIME_W_BACKEND_LOAD_BACKOFF_S="0.5",
    )
    try:
        with replicas(1, env, ready=False) as (server,):

            def retrying() -> httpx.Response | None:
                assert server.proc.poll() is None, server.log()
                try:
                    r = httpx.get(server.url + "/readyz", timeout=30)
                except httpx.TransportError:
                    return None
                return r if r.status_code == 503 and "trying again" in r.text else None

            r = wait_for(retrying, "/readyz 503 while the arm store is unreachable")
            assert r.json()["error"]["code"] == "not_ready" and int(r.headers["Retry-After"]) >= 1
            assert "store" in r.text
            pg_ctl(name, "start")
            wait_until_ready(server)
            with httpx.Client(timeout=HANG_GUARD_S) as c:
                assert score(c, server, "A train has 12 cars and 9 more join it. How many cars?").status_code == 200
    finally:
        subprocess.run(["pg_ctlcluster", "15", name, "start"], capture_output=True, timeout=HANG_GUARD_S)


# ----------------------------------------------------------------- issue 22 item 5: a running service learns new questions


@pytest.fixture(params=["sqlite", "postgres"])
def cache_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'arms.sqlite3'}"
        return
    with fresh_database() as url:
        yield url


def test_precompute_cli_while_the_service_runs_is_found_in_wrapped_prompts(
    upstream: str, tmp_path: Path, cache_url: str
) -> None:
    env = replica_env(tmp_path, upstream, cache_url)
    questions = [
        f"Precomputed {uuid.uuid4().hex[:6]}: Tom reads {i} pages a day for a week. How many pages?" for i in range(3)
    ]
    (tmp_path / "questions.txt").write_text("\n".join(questions) + "\n")
    with replicas(2, env) as (a, b):
        before = {s.url: indexed(s) for s in (a, b)}
        precompute = "import sys; from reward_service.cli import precompute_main; sys.exit(precompute_main())"
        done = subprocess.run(
            [sys.executable, "-c", precompute, str(tmp_path / "questions.txt")],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=HANG_GUARD_S,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout.strip().splitlines()[-1])["generated"] == 3
        through_a = f"Precomputed through one replica {uuid.uuid4().hex[:6]}: 7 boxes of 6 pens. How many pens?"
        r = httpx.post(
            a.url + "/v1/arms/precompute", json={"questions": [through_a]}, headers=a.headers, timeout=HANG_GUARD_S
        )
        assert r.status_code == 200 and r.json()["generated"] == 1, r.text
        questions.append(through_a)
        generated = completions(upstream)
        for s in (a, b):  # each replica learns them from the store (polled), without a restart
            wait_for(lambda s=s: indexed(s) >= before[s.url] + 4, f"{s.url} indexed the precomputed questions")
        with httpx.Client(timeout=HANG_GUARD_S) as c:
            for s in (a, b):
                for q in questions:
                    r = c.post(s.url + "/v1/score", json={"items": [item(wrapped(q))]}, headers=s.headers)
                    assert r.status_code == 200 and r.json()["results"][0]["arms_from_cache"], r.text
        assert completions(upstream) == generated  # no generation for the wrapped prompts
