"""The service with arms generated live by a tiny local Llama (backend hf): cache, single flight, restart."""

from __future__ import annotations

import concurrent.futures
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ServiceSpec, running_service, service_env
from tests.support.service_config import small_service_config

KEY = "hf-test-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}
SPEC = ServiceSpec("hf", api_key=KEY, max_tokens=16)
ROOT = Path(__file__).resolve().parents[1]


def metric(server_url: str, name: str) -> float:
    text = httpx.get(server_url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.fixture(scope="module")
def service_spec():
    return SPEC


@pytest.fixture(scope="module")
def hf_server(live_service):
    return live_service


@pytest.fixture(scope="module")
def hf_env(tiny_model_dir, tmp_path_factory):
    """The environment of SPEC, for tests that start (and restart) their own server or a CLI."""
    return service_env(SPEC, tmp_path_factory.mktemp("hf-service"), tiny_model_dir)


def score(url: str, question: str, trajectories=("The answer is 5. #### 5",), gold="5") -> dict:
    body = {"items": [{"id": "q", "question": question, "gold_answer": gold, "trajectories": list(trajectories)}]}
    r = httpx.post(url + "/v1/score", json=body, headers=HEADERS, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_generates_then_serves_from_cache(hf_server):
    q = "Tom has 3 apples and buys 2 more. How many apples does he have?"
    first = score(hf_server.url, q)["results"][0]
    assert first["arms_from_cache"] is False
    assert first["token_count_source"] == "tokenizer"
    second = score(hf_server.url, q)["results"][0]
    assert second["arms_from_cache"] is True
    # same arms -> same scores
    assert second["scores"] == first["scores"]
    info = httpx.get(hf_server.url + "/v1/info", headers=HEADERS).json()
    assert info["backend"] == "hf" and Path(info["scorer"]["model"]).name == Path(hf_server_model(hf_server)).name


def hf_server_model(server) -> str:
    return httpx.get(server.url + "/v1/info", headers=HEADERS).json()["scorer"]["model"]


def test_concurrent_requests_for_one_question_generate_once(hf_server):
    q = "A box holds 12 pens. How many pens are in 4 boxes?"
    before = metric(hf_server.url, "regime_w_arm_generations_total")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: score(hf_server.url, q, gold="48"), range(6)))
    generated = metric(hf_server.url, "regime_w_arm_generations_total") - before
    from reward_service.regime_w.config import load_config

    per_question = sum(a.n for a in load_config(None).arms)
    assert generated == per_question, f"{generated} arm texts generated for one question, expected {per_question}"
    assert all(r["results"][0]["consensus_answer"] == results[0]["results"][0]["consensus_answer"] for r in results)


def test_get_reward_openrlhf(hf_server):
    prompt = "Question: Sam has 7 coins and finds 5. How many coins?\nAnswer:"
    body = {
        "query": [prompt + " 7+5 = 12. #### 12", prompt + " 7+5 = 13. #### 13"],
        "prompts": [prompt, prompt],
        "labels": ["12", "12"],
    }
    r = httpx.post(hf_server.url + "/get_reward", json=body, headers=HEADERS, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["rewards"]) == 2 and out["scores"] == [1.0, 0.0]  # labelled: scores are correctness (0-1)
    assert out["extra_logs"]["correctness"] == [1.0, 0.0]
    assert out["rewards"][0] > out["rewards"][1]
    for key in ("s_end", "s_path", "s_cf", "s_wm"):
        assert len(out["extra_logs"][key]) == 2


def test_precompute_fills_the_cache(hf_server):
    qs = [f"Mia reads {n} pages a day for 3 days. How many pages?" for n in (4, 5, 6)]
    r = httpx.post(hf_server.url + "/v1/arms/precompute", json={"questions": qs + qs[:1]}, headers=HEADERS, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json() == {"questions": 3, "generated": 3, "already_cached": 0}
    again = httpx.post(hf_server.url + "/v1/arms/precompute", json={"questions": qs}, headers=HEADERS, timeout=120)
    assert again.json() == {"questions": 3, "generated": 0, "already_cached": 3}
    assert score(hf_server.url, qs[1], gold="15")["results"][0]["arms_from_cache"] is True


def test_cache_survives_a_restart(hf_env, tmp_path):
    env = {**hf_env, "REGIME_W_CACHE_PATH": str(tmp_path / "restart.sqlite3")}
    q = "Lily bakes 6 trays of 8 cookies. How many cookies?"
    with running_service(env=env, timeout=180) as first:
        before = score(first.url, q, gold="48")["results"][0]
        assert before["arms_from_cache"] is False
    with running_service(env=env, timeout=180) as second:
        after = score(second.url, q, gold="48")["results"][0]
        assert after["arms_from_cache"] is True
        assert metric(second.url, "regime_w_arm_generations_total") == 0
        assert after["scores"] == before["scores"]


def test_offline_cli_scores_examples_batch():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from reward_service.cli import score_main; raise SystemExit(score_main())",
            str(ROOT / "examples" / "batch.json"),
            "--backend",
            "provided",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["api_version"] == "1" and len(out["results"]) >= 5


def test_precompute_cli_fills_the_cache_a_server_then_uses(hf_env, tmp_path):
    data = tmp_path / "train.jsonl"
    questions = [f"Ana has {n} marbles and gives away 2. How many are left?" for n in (9, 10)]
    data.write_text(
        "".join(json.dumps({"question": q, "answer": f"#### {n - 2}"}) + "\n" for q, n in zip(questions, (9, 10)))
    )
    env = {**hf_env, "REGIME_W_CACHE_PATH": str(tmp_path / "pre.sqlite3")}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from reward_service.cli import precompute_main; raise SystemExit(precompute_main())",
            str(data),
            "--chunk",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["generated"] == 2
    with running_service(env=env, timeout=180) as server:
        result = score(server.url, questions[0], gold="7")["results"][0]
        assert result["arms_from_cache"] is True
        assert metric(server.url, "regime_w_arm_generations_total") == 0


def test_precompute_cli_rejects_a_bad_file(hf_env, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok?"}\nnot json\n')
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from reward_service.cli import precompute_main; raise SystemExit(precompute_main())",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, **hf_env},
    )
    assert proc.returncode == 2 and "bad.jsonl:2" in proc.stderr


def test_deadline_504_then_overload_503_then_the_cache_serves_the_retry(hf_env, tmp_path):
    env = {
        **hf_env,
        "REGIME_W_CONFIG_PATH": str(small_service_config(tmp_path, max_tokens=300)),
        "REGIME_W_CACHE_PATH": str(tmp_path / "deadline.sqlite3"),
        "REGIME_W_GENERATION_TIMEOUT_S": "0.05",
        "REGIME_W_MAX_PENDING_QUESTIONS": "1",
    }
    q1 = "Ben walks 3 km a day for 5 days. How many km does he walk?"
    q2 = "Ben walks 4 km a day for 5 days. How many km does he walk?"
    body = lambda q: {"items": [{"id": "q", "question": q, "trajectories": ["15 km. #### 15"]}]}  # noqa: E731
    with running_service(env=env, timeout=180) as server:
        slow = httpx.post(server.url + "/v1/score", json=body(q1), headers=HEADERS, timeout=60)
        assert slow.status_code == 504, slow.text
        assert slow.json()["error"]["code"] == "generation_timeout"
        busy = httpx.post(server.url + "/v1/score", json=body(q2), headers=HEADERS, timeout=60)
        assert busy.status_code == 503, busy.text
        assert busy.json()["error"]["code"] == "overloaded" and int(busy.headers["retry-after"]) >= 1
        # the generation of q1 went on in the background and filled the cache: the retry is served from it.
        # A retry that lands while that generation is finishing joins it in flight (200, not from the cache);
        # either way q1's arms are generated once, and the next request reads them from the cache.
        for _ in range(600):
            again = httpx.post(server.url + "/v1/score", json=body(q1), headers=HEADERS, timeout=60)
            if again.status_code == 200:
                break
            time.sleep(0.1)
        assert again.status_code == 200, again.text
        cached = httpx.post(server.url + "/v1/score", json=body(q1), headers=HEADERS, timeout=60)
        assert cached.status_code == 200 and cached.json()["results"][0]["arms_from_cache"] is True
        assert cached.json()["results"][0]["scores"] == again.json()["results"][0]["scores"]
        generated = re.search(r"^regime_w_arm_generations_total (\S+)$", httpx.get(server.url + "/metrics").text, re.M)
        assert generated is not None and float(generated.group(1)) == 8.0  # q1's 8 arms, once; q2 was refused
