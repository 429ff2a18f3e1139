"""Cost of finding the known question a wrapped prompt asks (``reward_service.question_index``).

Indexes ``--questions`` GSM8K-length questions (7,473 = GSM8K train) and times ``QuestionIndex.find``
on a chat-templated prompt (ChatML with a system prompt, the trainer's instruction) around one of
them, on a ``--prompt-chars`` prompt that holds one of them among other words (not resolved: scored
as sent), and on an exact (whitespace variant) hit. Two question sets: random word sequences with
the word and length distribution of the GSM8K fixtures in tests/data (distinct prefixes, like real
GSM8K), and the toy world's generated problems (templated: many share their first words). Then the
adversarial case of issue 22: 2,048 indexed questions sharing a 1,900-character prefix, and a
``--long-chars`` prompt made of that prefix repeated (the old index took 13.6 s for one lookup).

    python3 bench/question_index_lookup.py
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from reward_service.question_index import QuestionIndex  # noqa: E402
from trainer.prompts import INSTRUCTION  # noqa: E402


def gsm8k_like(n: int, rng: random.Random) -> list[str]:
    rows = [
        json.loads(line)["question"]
        for f in sorted((HERE.parent / "tests/data").glob("gsm8k_*.jsonl"))
        for line in f.open()
    ]
    words = [w for q in rows for w in q.split()]
    lengths = [len(q.split()) for q in rows]
    out: dict[str, None] = {}
    while len(out) < n:
        out[" ".join(rng.choice(words) for _ in range(rng.choice(lengths)))] = None
    return list(out)


def toy(n: int) -> list[str]:
    from trainer.toy.problems import generate_problems

    out: dict[str, None] = {}
    seed = 0
    while len(out) < n:
        for p in generate_problems(n, seed):
            out[p.question] = None
        seed += 1
    return list(out)[:n]


def templated(question: str) -> str:
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"{question}\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n"
    )


def among_words(question: str, chars: int, rng: random.Random, filler_words: list[str]) -> str:
    filler = ""
    while len(filler) + len(question) < chars:
        filler += rng.choice(filler_words) + " "
    return templated(filler + "\n\n" + question)


def time_find(index: QuestionIndex, texts: list[str], repeat: int) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        for t in texts:
            index.find(t)
        runs.append((time.perf_counter() - started) / len(texts) * 1e6)
    return statistics.median(runs), min(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=7473)
    parser.add_argument("--prompt-chars", type=int, default=2000)
    parser.add_argument("--long-chars", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(0)
    filler_words = ["Read", "the", "problem", "carefully;", "numbers", "matter.", "Think", "before", "answering."]
    for name, questions in (("gsm8k-like", gsm8k_like(args.questions, rng)), ("toy", toy(args.questions))):
        index = QuestionIndex()
        started = time.perf_counter()
        added = index.add_many(questions)
        build_ms = (time.perf_counter() - started) * 1e3
        picks = [rng.choice(questions) for _ in range(args.lookups)]
        wrapped = [templated(q) for q in picks]
        assert all(index.find(t).question == q for t, q in zip(wrapped, picks))  # type: ignore[union-attr]
        other_words = [among_words(q, args.prompt_chars, rng, filler_words) for q in picks]
        exact = ["  " + q.replace(" ", "\n ") + "\n" for q in picks]
        print(f"{name}: {added} questions indexed in {build_ms:.0f} ms")
        for label, texts in (
            (f"templated ({statistics.mean(map(len, wrapped)):.0f} ch)", wrapped),
            (f"among words ({statistics.mean(map(len, other_words)):.0f} ch)", other_words),
            ("exact (whitespace)", exact),
        ):
            median, best = time_find(index, texts, args.repeat)
            print(f"  find, {label:<24} {median:8.1f} us per lookup (median of {args.repeat} runs; best {best:.1f})")
    prefix = "word " * 380
    shared = [f"{prefix}then {i} more. How many?" for i in range(2048)]
    index = QuestionIndex()
    index.add_many(shared)
    long_prompt = templated((prefix * (args.long_chars // len(prefix) + 1))[: args.long_chars])
    started = time.perf_counter()
    index.find(long_prompt)
    took = time.perf_counter() - started
    print(
        f"adversarial: 2,048 questions sharing a {len(prefix)}-char prefix, one {len(long_prompt)}-char prompt: "
        f"find {took * 1e3:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
