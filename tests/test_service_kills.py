"""SIGKILL during arm generation (issue 11, "kills"): the SQLite arm cache stays intact and every
entry it holds is whole; a restarted service serves them and generates the rest.

Slow (a model reload per kill): ``pytest -m slow tests/test_service_kills.py -s``.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import threading
import time

import httpx
import pytest

from tests.support.limits import HANG_GUARD_S
from tests.support.servers import ServiceSpec, running_service, service_env

KILLS = 10
QUESTIONS = [f"A shelf holds {n} books and {n + 3} more arrive. How many books?" for n in range(40)]


@pytest.mark.slow
def test_arm_cache_survives_repeated_sigkill(tiny_model_dir, tmp_path) -> None:
    spec = ServiceSpec(
        "hf",
        api_key="kill-test-key-0123456789",
        max_tokens=8,
        env={"REGIME_W_ARM_BATCH_QUESTIONS": "2", "REGIME_W_GENERATION_BATCH_ROWS": "2"},
    )  # small batches: writes between kills
    env = service_env(spec, tmp_path, tiny_model_dir)
    headers = {"Authorization": f"Bearer {spec.api_key}"}
    rng = random.Random(0)
    for kill in range(KILLS):
        with running_service(env=env, timeout=180) as server:

            def precompute() -> None:
                try:
                    for question in QUESTIONS:  # one question a request: the cache fills as it goes
                        httpx.post(
                            server.url + "/v1/arms/precompute",
                            json={"questions": [question]},
                            headers=headers,
                            timeout=300,
                        )
                except httpx.HTTPError:
                    pass  # the server is killed under it

            worker = threading.Thread(target=precompute)
            worker.start()
            time.sleep(rng.uniform(2.0, 12.0))
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(timeout=HANG_GUARD_S)
            worker.join(timeout=60)
        db = sqlite3.connect(env["REGIME_W_CACHE_PATH"])
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT payload FROM arms").fetchall()
        for (payload,) in rows:
            arms = json.loads(payload)
            assert arms and all(isinstance(a, str) and isinstance(t, str) for a, t in arms)
        db.close()
        print(f"kill {kill + 1}: integrity ok, {len(rows)} cached questions")
    assert len(rows) > 0, "no kill let a generation finish: the test proves nothing"
    with running_service(env=env, timeout=180) as server:
        r = httpx.post(server.url + "/v1/arms/precompute", json={"questions": QUESTIONS}, headers=headers, timeout=600)
        assert r.status_code == 200, r.text
        counts = r.json()
        assert counts["questions"] == len(QUESTIONS) and counts["generated"] + counts["already_cached"] == len(
            QUESTIONS
        )
        print(f"after {KILLS} kills: {counts}")
        score = httpx.post(
            server.url + "/v1/score",
            headers=headers,
            timeout=120,
            json={"items": [{"id": "q", "question": QUESTIONS[0], "gold_answer": "3", "trajectories": ["#### 3"]}]},
        )
        assert score.status_code == 200 and score.json()["results"][0]["arms_from_cache"] is True
