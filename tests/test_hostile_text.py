"""Hostile text against a live ``regime-w-serve`` (issue 22): never another question's arms, never arm text out.

One service (backend ``hf``, the tiny model, keyed): question A, B and two tails of A that start at a
number ("5 kg ...", "200 g ...") precomputed, then every text of
``tests.test_question_index.HOSTILE`` — A with an instruction appended, a second question, a prefix that
changes it, few-shot prompts, near-duplicates differing in a number — is scored. Each must be scored as
sent: arms generated for it (the service's generation counter grows by one question's arms per text),
``arms_from_cache`` false, and ``arms_question_sha256`` the hash of the text itself, not A's. A wrapped A
(template + known instruction) is the control: A's arms, no generation. Then the consensus over HTTP
when the arm texts box free text (an arm model that writes its system prompt into its answer).
"""

from __future__ import annotations

import httpx

from shared_schemas.wire import question_sha256
from tests.support.servers import ServiceSpec, start_live_service
from tests.test_question_index import HOSTILE, A, B, metric
from trainer.prompts import INSTRUCTION

GENERATIONS = "regime_w_arm_generations_total"


def score(service, items: list[dict]) -> list[dict]:
    r = httpx.post(service.url + "/v1/score", json={"items": items}, headers=service.headers, timeout=600)
    assert r.status_code == 200, r.text
    return r.json()["results"]


def item(i: int, question: str, **extra) -> dict:
    return {"id": f"q{i}", "question": question, "trajectories": ["5000 / 200 = 25. #### 25"], **extra}


def test_hostile_texts_are_scored_as_sent_and_say_whose_arms_scored_them(tiny_model_dir, tmp_path) -> None:
    with start_live_service(ServiceSpec(), tmp_path, tiny_model_dir) as service:
        known = [A, B, A[A.index("5 kg") :], A[A.index("200 g") :]]  # and the tails of A that start at a number
        r = httpx.post(
            service.url + "/v1/arms/precompute", json={"questions": known}, headers=service.headers, timeout=600
        )
        assert r.status_code == 200 and r.json()["generated"] == len(known)
        per_question = metric(service.url, GENERATIONS) / len(known)
        assert per_question >= 1

        wrapped = f"<|user|>{A}\n{INSTRUCTION}<|end|>\n<|assistant|>"  # the control: a template and a known instruction
        (control,) = score(service, [item(0, wrapped)])
        assert control["arms_from_cache"] is True and control["arms_question_sha256"] == question_sha256(A)

        before = metric(service.url, GENERATIONS)
        texts = list(HOSTILE.values())
        results = score(service, [item(i, text) for i, text in enumerate(texts)])
        for (name, text), result in zip(HOSTILE.items(), results):
            assert result["arms_from_cache"] is False, name  # before: a known question's arms (12 of these 14)
            assert result["arms_question_sha256"] == question_sha256(text), name
            assert result["arms_question_sha256"] not in {question_sha256(q) for q in known}, name
        # one arm set generated per hostile text: none was served A's (or another known question's) arms
        assert metric(service.url, GENERATIONS) - before == per_question * len(texts)

        # arm texts that box free text (a system prompt) neither vote nor come back as the consensus
        leak = "\\boxed{You are a careful mathematician. Reason in numbered steps and check each one twice.}"
        arms = [{"arm": "cot_greedy", "text": leak}, {"arm": "cot_sampled", "text": leak}]
        (only_leaks,) = score(service, [item(0, A, arm_outputs=arms)])
        assert only_leaks["consensus_answer"] is None  # before: the boxed sentence, lower-cased
        assert only_leaks["arms_question_sha256"] == question_sha256(A)  # the client's arms are for its question
        (with_number,) = score(
            service, [item(0, A, arm_outputs=[*arms, {"arm": "equations_first", "text": "#### 25"}])]
        )
        assert with_number["consensus_answer"] == "25"
