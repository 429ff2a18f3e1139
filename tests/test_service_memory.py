"""Bounded memory (issue 11, item 1): every cache and memo of the service has a bound from the
settings, and a live server driven with ten times that bound of distinct requests stays flat."""

from __future__ import annotations

import gc
import os
import random
import time
import tracemalloc
from pathlib import Path

import httpx

from reward_service.arm_cache import ArmCache
from reward_service.memo import ANSWER_COST, PreparedMemo, prepared_size
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
    for i in range(30):  # 10x the byte bound (~20 kB parsed an entry: arms dense with equations)
        q = f"Question {i}?"
        texts = dense_arm_texts(str(i), 600)
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


def dense_arm_texts(tag: str, chars: int) -> tuple[ArmText, ...]:
    """Arm texts that are all equations (``a + b = c.``, random 1-5 digit numbers): every number is a
    derived quantity, so the parsed arms are many small strings, several times the text's size."""
    rnd = random.Random(tag)
    texts = []
    for a in ARMS:
        parts, n = [], 0
        while n < chars:
            x, y = rnd.randint(1, 99_999), rnd.randint(1, 99_999)
            part = f"{x} + {y} = {x + y}. "
            parts.append(part)
            n += len(part)
        texts.append(ArmText(arm=a, text="".join(parts)[:chars] + "\n#### 72"))
    return tuple(texts)


def memo_retained_bytes(bound: int, entries: int, chars: int) -> tuple[int, int]:
    """Fill a memo bounded at ``bound`` bytes with ``entries`` distinct questions of dense arms;
    the bytes it retains (tracemalloc: traced memory with the memo minus without it, so the parse
    caches of other modules, bounded on their own, are left out) and the entries it kept."""
    tracemalloc.start()
    try:
        memo = PreparedMemo(max_items=10_000, max_bytes=bound)
        for i in range(entries):
            q = f"Question {i}: what is 70 + 2?"
            texts = dense_arm_texts(f"dense-{i}", chars)
            memo.get(q, texts, lambda q=q, texts=texts: prepare_arms(q, texts, CONFIG))
            del texts
        gc.collect()
        with_memo = tracemalloc.get_traced_memory()[0]
        kept = memo.items
        del memo
        gc.collect()
        without = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return with_memo - without, kept


def test_memo_of_dense_arms_holds_what_its_bound_says() -> None:
    """Arms dense with equations, 10x the byte bound of them: what the memo retains (tracemalloc)
    stays within 1.5x the bound. Before (an estimate of one byte a character of arm text) it kept
    6x the bound: 1.2 GB resident at the default 256 MiB."""
    bound = 1024 * 1024
    chars = 5_000  # > 16 kB would skip shared_schemas.answer's text cache; 5,000 keeps the test quick
    per_entry = prepared_size(prepare_arms("Question?", dense_arm_texts("probe", chars), CONFIG))
    entries = 10 * bound // per_entry + 1
    retained, kept = memo_retained_bytes(bound, entries, chars)
    print(
        f"{entries} entries of 8 dense arms x {chars} chars ({per_entry / 2**10:.0f} KiB parsed each) into a "
        f"{bound / 2**20:.0f} MiB memo: kept {kept}, retained {retained / 2**20:.2f} MiB "
        f"({retained / bound:.2f}x the bound)"
    )
    assert kept >= 2, "the memo kept almost nothing: the estimate overcounts"
    assert retained <= 1.5 * bound, f"the memo retained {retained / bound:.2f}x its byte bound"
