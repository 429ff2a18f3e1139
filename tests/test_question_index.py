"""A question wrapped in a template, an instruction or other whitespace uses the arms cached for it.

``reward_service.question_index`` alone; the arm cache's question table (and a cache file of the
older schema); and a live ``regime-w-serve`` (hf backend, tiny model): after ``/v1/arms/precompute``
of the raw question, ``/v1/score`` and ``/get_reward`` with wrapped questions generate no arm text,
also after a restart on the same cache file (the index is rebuilt from SQLite).
"""

from __future__ import annotations

import sqlite3

import httpx

from reward_service.arm_cache import ArmCache, cache_key
from reward_service.question_index import QuestionIndex, normalize
from reward_service.regime_w.scorer import ArmText
from tests.support.servers import ServiceSpec, start_live_service
from trainer.prompts import INSTRUCTION

Q = "Mia has 6 shells and finds 3 more on the beach. How many shells does she have now?"
Q2 = "A baker made 24 rolls and sold 9 of them in the morning. How many rolls are left?"


def test_normalize_collapses_whitespace() -> None:
    assert normalize("  a\n\tb   c \r\n") == "a b c"


def test_finds_a_known_question_inside_templates_and_whitespace() -> None:
    index = QuestionIndex()
    assert index.add_many([Q, Q2, "How many?"]) == 2  # the short one is never indexed
    assert index.find(Q.replace(" ", "\n  ") + "\n").__dict__ == {"question": Q, "how": "exact"}
    for wrapped in (
        f"<|user|>{Q}\n{INSTRUCTION}<|end|>\n<|assistant|>",
        f"<|start_header_id|>user<|end_header_id|>\n\n{Q}\nLet's think step by step.<|eot_id|>",
        "Solve this:\n\n" + Q.replace(". ", ".\n") + "\n\nAnswer with a number.",
    ):
        match = index.find(wrapped)
        assert match is not None and (match.question, match.how) == (Q, "contained")
    assert index.find("Nothing known here, only a long enough sentence about kayaks.") is None


def test_no_false_matches() -> None:
    index = QuestionIndex()
    index.add_many([Q, "Tom has 3 apples and 4 pears in total"])
    # glued to other words: not the known question
    assert index.find(f"X{Q}") is None
    assert index.find("Tom has 3 apples and 4 pears in totality, and 2 plums. How many fruits?") is None
    assert index.find("<|user|>Tom has 3 apples and 4 pears in total<|end|>") is not None
    # a short known question is never looked for inside a text
    short = QuestionIndex()
    short.add("How many cats?")
    assert short.find("Tom has 3 cats and 2 dogs. How many cats? Count twice.") is None


def test_longest_wins_and_side_by_side_is_ambiguous() -> None:
    inner = "How many shells does she have now?"
    index = QuestionIndex()
    index.add_many([Q, inner, Q2])
    match = index.find(f"<|user|>{Q}<|end|>")  # Q contains `inner`: overlapping, the longest wins
    assert match is not None and match.question == Q
    fewshot = f"Example: {Q2}\nAnswer: 15\n\nQuestion: {Q}\nAnswer:"
    match = index.find(fewshot)  # two known questions side by side: not resolved
    assert match is not None and (match.question, match.how) == (None, "ambiguous")
    assert index.find(f"{Q}\n\nAgain: {Q}") is not None  # the same question twice is not ambiguous


def test_bounded_index() -> None:
    index = QuestionIndex(max_questions=2)
    assert index.add_many([Q, Q2, Q + " Explain."]) == 2 and index.dropped == 1 and len(index) == 2


def test_arm_cache_lists_its_questions_and_opens_an_old_file(tmp_path) -> None:
    path = tmp_path / "arms.sqlite3"
    db = sqlite3.connect(path)  # a file written before arm_questions existed
    db.execute(
        "CREATE TABLE arms (key TEXT PRIMARY KEY, model TEXT NOT NULL, fingerprint TEXT NOT NULL, "
        "created REAL NOT NULL, payload TEXT NOT NULL)"
    )
    db.execute("INSERT INTO arms VALUES (?, 'm', 'f', 0, '[[\"a\", \"t\"]]')", (cache_key("m", "f", Q2),))
    db.commit()
    db.close()
    cache = ArmCache(path)
    assert cache.get(cache_key("m", "f", Q2)) is not None  # old rows still served
    assert cache.questions("m", "f") == []  # their text is unknown until recorded
    arms = (ArmText(arm="a", text="t"),)
    cache.put_many([(cache_key("m", "f", Q), "m", "f", arms), (cache_key("m", "g", Q), "m", "g", arms)])
    cache.put_questions(
        [
            (cache_key("m", "f", Q), "m", "f", Q),
            (cache_key("m", "f", Q2), "m", "f", Q2),
            (cache_key("m", "g", Q), "m", "g", Q),
            (cache_key("m", "f", "no arms"), "m", "f", "no arms"),  # no row in arms: not listed
            ("forged", "m", "f", "a text whose key does not match"),
        ]
    )
    assert sorted(cache.questions("m", "f")) == sorted([Q, Q2])
    assert cache.questions("m", "g") == [Q]
    cache.close()
    assert sorted(ArmCache(path).questions("m", "f")) == sorted([Q, Q2])
    assert ArmCache(None).questions("m", "f") == []


# ------------------------------------------------------------------------------------ live service


def metric(url: str, name: str, label: str = "") -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and label in line and not line.startswith("#")
    )


def score(service, question: str) -> dict:
    body = {"items": [{"id": "x", "question": question, "gold_answer": "9", "trajectories": ["6+3 = 9. #### 9"]}]}
    r = httpx.post(service.url + "/v1/score", json=body, headers=service.headers, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["results"][0]


WRAPPED = [
    f"<|user|>{Q}\n{INSTRUCTION}<|end|>\n<|assistant|>",  # the tiny model's chat template
    f'{Q}\nLet\'s think step by step and output the final answer after "####".',  # verl's GSM8K instruction
    f"  {Q.replace(' ', '  ')}\n",  # other whitespace
    f"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{Q}",  # Llama-3 system header: numbers
]


def test_wrapped_questions_use_the_precomputed_arms_across_a_restart(tiny_model_dir, tmp_path) -> None:
    spec = ServiceSpec()
    with start_live_service(spec, tmp_path, tiny_model_dir) as service:
        r = httpx.post(
            service.url + "/v1/arms/precompute", json={"questions": [Q]}, headers=service.headers, timeout=300
        )
        assert r.status_code == 200 and r.json()["generated"] == 1
        generated = metric(service.url, "regime_w_arm_generations_total")
        plain = score(service, Q)
        for text in WRAPPED:
            result = score(service, text)
            assert result["arms_from_cache"] is True
            # scored as the known question: the wrapper's numbers (dates) do not enter s_path or coverage
            assert result["scores"][0] == plain["scores"][0], text
        # OpenRLHF's /get_reward: a prompt with another instruction resolves to the same question
        body = {"query": [WRAPPED[1] + " 6+3 = 9. #### 9"], "prompts": [WRAPPED[1]], "labels": ["9"]}
        r = httpx.post(service.url + "/get_reward", json=body, headers=service.headers, timeout=300)
        assert r.status_code == 200 and r.json()["scores"] == [1.0]
        assert metric(service.url, "regime_w_arm_generations_total") == generated  # not one arm text generated
        assert metric(service.url, "regime_w_arm_question_matches_total", 'how="contained"') >= 3
        assert metric(service.url, "regime_w_arm_question_matches_total", 'how="exact"') >= 1
        # a new question is learned once generated: its wrapped form then hits the cache
        score(service, Q2)
        after_q2 = metric(service.url, "regime_w_arm_generations_total")
        assert score(service, f"<|user|>{Q2}<|end|>")["arms_from_cache"] is True
        assert metric(service.url, "regime_w_arm_generations_total") == after_q2
        assert metric(service.url, "regime_w_arm_questions_indexed") == 2

    with start_live_service(spec, tmp_path, tiny_model_dir) as restarted:  # same cache file
        assert metric(restarted.url, "regime_w_arm_questions_indexed") == 2  # read back from SQLite
        for text in WRAPPED[:2]:
            assert score(restarted, text)["arms_from_cache"] is True
        assert metric(restarted.url, "regime_w_arm_generations_total") == 0
