"""Bounded memory (issue 11, item 1): every cache and memo of the service has a bound from the
settings, and a live server driven with ten times that bound of distinct requests stays flat."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from reward_service.arm_cache import ArmCache
from reward_service.memo import ANSWER_COST, PreparedMemo
from reward_service.regime_w.config import default_config
from reward_service.regime_w.scorer import ArmText, prepare_arms
from tests.support.servers import running_service

KEY = "memory-test-key-0123456789"
CONFIG = default_config()
ARMS = list(CONFIG.arm_names)


def arm_texts(tag: str, chars: int) -> tuple[ArmText, ...]:
    filler = ("the arm reasons in words about the " + tag + " problem ") * (chars // 40 + 1)
    return tuple(ArmText(arm=a, text=filler[:chars] + "\n#### 72") for a in ARMS)


def test_memo_keeps_under_its_entry_and_byte_bounds() -> None:
    memo = PreparedMemo(max_items=5, max_bytes=200_000)
    for i in range(50):  # 10x the entry bound, distinct questions
        q = f"Question {i}: how many?"
        texts = arm_texts(str(i), 2_000)
        memo.get(q, texts, lambda q=q, texts=texts: prepare_arms(q, texts, CONFIG))
        assert memo.items <= 5 and memo.bytes <= 200_000
    memo = PreparedMemo(max_items=100, max_bytes=200_000)
    for i in range(30):  # 10x the byte bound (~20 kB an entry)
        q = f"Question {i}?"
        texts = arm_texts(str(i), 2_500)
        memo.get(q, texts, lambda q=q, texts=texts: prepare_arms(q, texts, CONFIG))
        assert memo.bytes <= 200_000
    assert memo.items < 30


def test_scoring_charges_the_per_answer_memo() -> None:
    """One hot question scored with ever new answers: its entry's cost grows until it is dropped."""
    memo = PreparedMemo(max_items=10, max_bytes=100 * ANSWER_COST + 2_000)
    texts = arm_texts("hot", 100)
    key, first = memo.get("Hot?", texts, lambda: prepare_arms("Hot?", texts, CONFIG))
    memo.charge(key, 50)
    assert memo.get("Hot?", texts, lambda: prepare_arms("Hot?", texts, CONFIG))[1] is first
    memo.charge(key, 60)  # over budget: the entry goes and the next request parses afresh
    assert memo.items == 0 and memo.bytes == 0
    assert memo.get("Hot?", texts, lambda: prepare_arms("Hot?", texts, CONFIG))[1] is not first


def test_arm_cache_memory_layer_is_bounded_in_items_and_characters(tmp_path: Path) -> None:
    cache = ArmCache(None, memory_items=4, memory_bytes=50_000)
    fp = CONFIG.fingerprint
    for i in range(40):  # 10x the item bound
        cache.put_many([(f"k{i}", "m", fp, arm_texts(str(i), 500))])
        assert len(cache._memory) <= 4 and cache._memory_chars <= 50_000
    cache = ArmCache(tmp_path / "arms.sqlite3", memory_items=1000, memory_bytes=50_000)
    for i in range(40):  # 10x the character bound (~8 kB an arm set)
        cache.put_many([(f"k{i}", "m", fp, arm_texts(str(i), 1_000))])
        assert cache._memory_chars <= 50_000
    assert cache.get("k0") is not None  # evicted from memory, still on disk
    cache.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_live_server_memory_stays_flat_under_ten_times_the_memo_bound() -> None:
    """Distinct questions, each with 8 arm texts of 60,000 characters (480 kB a request), 10x the
    memo's byte bound of 8 MiB: the server's RSS stays within 40 MiB of where it started (before the
    bound, the memo kept every request's arm texts: 56 -> 146 MiB on the same load, measured by
    pointing ``RSS_TEST_SERVICE_CHECKOUT`` at a checkout of commit 8f73e05)."""
    checkout = os.environ.get("RSS_TEST_SERVICE_CHECKOUT")  # serve another checkout's code (before/after)
    bound = 8 * 1024 * 1024
    env = {
        "REGIME_W_API_KEYS": KEY,
        "REGIME_W_BACKEND": "provided",
        "REGIME_W_CACHE_PATH": "none",
        "REGIME_W_PREPARED_MEMO_BYTES": str(bound),
        **({"PYTHONPATH": checkout} if checkout else {}),
    }
    per_request = 8 * 60_000
    requests = 10 * bound // per_request + 1

    def body(i: int) -> dict:
        texts = arm_texts(f"q{i}", 60_000)
        return {
            "items": [
                {
                    "id": f"q{i}",
                    "question": f"Question {i}: what is 70 + 2?",
                    "gold_answer": "72",
                    "trajectories": ["70 + 2 = 72\n#### 72"],
                    "num_tokens": [8],
                    "arm_outputs": [{"arm": a.arm, "text": a.text} for a in texts],
                }
            ],
            "return_details": False,
        }

    with (
        running_service(env=env, timeout=60, cwd=checkout) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client,
    ):
        for i in range(5):  # warm up allocator and imports
            assert client.post("/v1/score", json=body(-1 - i)).status_code == 200
        time.sleep(0.2)
        before = rss_bytes(server.proc.pid)
        for i in range(requests):
            r = client.post("/v1/score", json=body(i))
            assert r.status_code == 200, r.text
        after = rss_bytes(server.proc.pid)
    grown = after - before
    print(f"{requests} requests x {per_request} chars of arm text: RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB")
    assert grown < 40 * 1024 * 1024, f"RSS grew by {grown / 2**20:.0f} MiB"
