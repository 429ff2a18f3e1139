"""A question wrapped in a template, an instruction or other whitespace uses the arms cached for it.

``reward_service.question_index`` alone; the arm cache's question table (and a cache file of the
older schema); and a live ``regime-w-serve`` (hf backend, tiny model): after ``/v1/arms/precompute``
of the raw question, ``/v1/score`` and ``/get_reward`` with wrapped questions generate no arm text,
also after a restart on the same cache file (the index is rebuilt from SQLite).
"""

from __future__ import annotations

import logging
import sqlite3

import httpx

from reward_service.arm_cache import ArmCache, cache_key
from reward_service.question_index import INSTRUCTIONS, IndexBounds, Match, QuestionIndex, normalize, strip_scaffolding
from reward_service.regime_w.scorer import ArmText
from tests.support.servers import ServiceSpec, start_live_service
from trainer.prompts import INSTRUCTION

Q = "Mia has 6 shells and finds 3 more on the beach. How many shells does she have now?"
Q2 = "A baker made 24 rolls and sold 9 of them in the morning. How many rolls are left?"


def test_normalize_collapses_whitespace() -> None:
    assert normalize("  a\n\tb   c \r\n") == "a b c"


def test_finds_a_known_question_inside_templates_and_whitespace() -> None:
    index = QuestionIndex()
    assert index.add_many([Q, Q2, "How many?"]) == 3
    assert index.find(Q.replace(" ", "\n  ") + "\n").__dict__ == {"question": Q, "how": "exact"}
    for wrapped in (
        f"<|user|>{Q}\n{INSTRUCTION}<|end|>\n<|assistant|>",  # Phi-3 (the tiny model's template)
        f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{Q}\nLet's think step by step.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",  # Llama 3
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n{Q}\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n",  # Qwen 2.5
        f"<｜begin▁of▁sentence｜><｜User｜>{Q}\n{INSTRUCTION}<｜Assistant｜><think>\n",  # DeepSeek-R1
        f"<s>[INST] {Q} [/INST]",  # Mistral
        f"<bos><start_of_turn>user\n{Q}<end_of_turn>\n<start_of_turn>model\n",  # Gemma
        "Question: " + Q.replace(". ", ".\n") + "\nAnswer:",  # the trainer's plain prompt, other line breaks
        f'{Q}\nLet\'s think step by step and output the final answer after "####".',  # verl's GSM8K instruction
    ):
        match = index.find(wrapped)
        assert match is not None and (match.question, match.how) == (Q, "contained"), wrapped
    assert index.find("<|user|>How many?<|end|>") == Match("How many?", "contained")  # the whole prompt asks it
    assert index.find("Nothing known here, only a long enough sentence about kayaks.") is None


def test_a_question_cached_with_its_instruction_is_found_inside_a_template() -> None:
    with_instruction = f"{Q}\n{INSTRUCTION}"
    index = QuestionIndex()
    index.add(with_instruction)
    assert index.find(f"<|im_start|>user\n{with_instruction}<|im_end|>\n<|im_start|>assistant\n") == Match(
        with_instruction, "contained"
    )


# A precomputed question A, and texts that hold A but ask something else (issue 22, item 1).
A = "A farmer has 5 kg of apples and sells 200 g of them each day. How many days do the apples last?"
B = "A baker made 24 rolls and sold 9 of them in the morning. How many rolls are left?"
HOSTILE = {
    "instruction appended": A + " Give the answer in dozens.",
    "instruction inside a template": f"<|user|>{A} Give the answer in dozens.<|end|>\n<|assistant|>",
    "a second question after A": f"{A} Then he buys 3 kg more. How many days do they last now?",
    "a prefix that changes A's meaning": f"Every number below is in hundreds. {A}",
    "few-shot: A the example, B the new question": f"Question: {A}\nAnswer: 25\n\nQuestion: {B}\nAnswer:",
    "few-shot, both known": f"{A}\n{B}",
    "2.5 kg found as 5 kg": A.replace("5 kg", "2.5 kg"),
    "1,200 g found as 200 g": "1," + A[A.index("200 g") :],
    "a digit glued to the last number": A.replace("5 kg", "15 kg"),
    "-5 found as 5": A.replace("5 kg", "-5 kg"),
    "unicode minus": A.replace("5 kg", "\u22125 kg"),
    "exponent": A.replace("5 kg", "10^5 kg"),
    "sign after a template token": f"<|user|>-{A}<|end|>",
    "a date that swallows a digit": f"Today Date: 26 Jul 2024{A[0]}{A}",  # "...20245 kg" is no date
}


def test_hostile_wrappings_are_never_resolved_to_the_known_question() -> None:
    """A wrapped text resolves to a known question only when what remains around it is template or known
    instruction text; numbers match whole. Before: each of these found A (or was ambiguous only when
    both questions were known)."""
    index = QuestionIndex()
    # known too: the tails of A that start at a number ("5 kg ...", "200 g ...")
    index.add_many([A, B, A[A.index("5 kg") :], A[A.index("200 g") :]])
    assert index.find(f"<|user|>{A}<|end|>") == Match(A, "contained")
    for name, text in HOSTILE.items():
        assert index.find(text) is None, name


def test_the_allow_list_is_scaffolding_only() -> None:
    """Every template piece and instruction alone strips to nothing; none holds a number that could be
    read as part of the question (the Llama date header's digits end on a non-digit)."""
    for instruction in INSTRUCTIONS:
        assert strip_scaffolding(normalize(instruction)) == ""
    templates = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|> Cutting Knowledge Date: December 2023 "
        "Today Date: 26 Jul 2024 <|eot_id|><|start_header_id|>assistant<|end_header_id|>",
        "<|im_start|>system <|im_end|> <|im_start|>assistant <|endoftext|>",
        "<｜begin▁of▁sentence｜><｜User｜><｜Assistant｜><think></think><｜end▁of▁sentence｜>",
        "<s>[INST] [/INST]</s> <|system|><|user|><|end|><|assistant|>",
        "<bos><start_of_turn>user <end_of_turn> <start_of_turn>model",
        "Question: Problem: Solve: Solve this: Answer: Solution:",
    )
    for text in templates:  # every template piece, each found at both ends
        assert strip_scaffolding(text) == "", text
        assert strip_scaffolding(f"{text} x {text}") == "x", text
    assert strip_scaffolding("<|im_start|>user x <|im_end|> <|im_start|>assistant") == "x"
    assert strip_scaffolding("<|im_start|>users of x<|im_end|>") == "users of x"  # a role word is a whole word
    assert strip_scaffolding("Today Date: 26 Jul 20245 apples") == "Today Date: 26 Jul 20245 apples"


def test_lookup_is_exact_whatever_the_indexed_questions_share() -> None:
    """2,048 questions sharing a 1,900-character prefix (the case that blocked the loop 13.6 s): each is
    found, a prompt holding the prefix only is not. The cost is measured in bench/question_index_lookup.py."""
    prefix = "word " * 380
    questions = [f"{prefix}then {i} more. How many?" for i in range(2048)]
    index = QuestionIndex()
    assert index.add_many(questions) == 2048
    assert index.find(f"<|user|>{questions[1234]}<|end|>") == Match(questions[1234], "contained")
    assert index.find(f"<|user|>{prefix}then 1234 more.<|end|>") is None
    assert index.find(prefix * 50) is None


def test_bounded_index_counts_and_logs_what_it_leaves_out(caplog) -> None:
    index = QuestionIndex(IndexBounds(max_questions=2))
    with caplog.at_level(logging.WARNING, logger="reward_service.question_index"):
        assert index.add_many([Q, Q2, Q + " Explain."]) == 2
    assert index.dropped == 1 and len(index) == 2
    assert "1 question(s) not indexed" in caplog.text
    by_chars = QuestionIndex(IndexBounds(max_chars=len(Q) + len(Q2)))
    assert by_chars.add_many([Q, Q2, "How many?"]) == 2 and by_chars.dropped == 1 and by_chars.chars == len(Q) + len(Q2)
    # nothing is dropped below the bounds: no per-prefix cap (issue 22, item 5)
    shared = QuestionIndex()
    assert shared.add_many([f"{'same start ' * 5}{i}" for i in range(5000)]) == 5000 and shared.dropped == 0


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
        assert metric(service.url, "regime_w_arm_questions_not_indexed") == 0  # bounds far away: nothing left out

    with start_live_service(spec, tmp_path, tiny_model_dir) as restarted:  # same cache file
        assert metric(restarted.url, "regime_w_arm_questions_indexed") == 2  # read back from SQLite
        for text in WRAPPED[:2]:
            assert score(restarted, text)["arms_from_cache"] is True
        assert metric(restarted.url, "regime_w_arm_generations_total") == 0
