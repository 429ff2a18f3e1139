"""Generate the labeled answer-format corpus (DESIGN §2): completions in the styles real models write.

Each GSM8K question/gold pair is written out in every style below, each completion right or wrong
(a seeded choice), and labeled by construction: ``value`` is the number the completion states as
its final answer, ``label`` whether that equals the gold. The labels never come from
``shared_schemas.answer``: ``tests/test_answer_corpus.py`` checks the project's parser against them,
and ``bench/answer_agreement.py`` checks math-verify against them.

Styles (the ``class`` field): GSM8K ``#### N``; DeepSeek-R1 (``<think>`` closed and unclosed,
``**Final Answer**`` with ``\\[ \\boxed{…} \\]``, markdown summaries with ``###``/``####`` headings);
boxes holding ``1{,}250``, ``\\dfrac``, ``\\text{}`` units, ``$…$``, ``%``, an equation, an
unevaluated sum, scientific notation; chat prose ("The final answer is $72$. I hope it is
correct."); JSON answer objects followed by prose; drafts corrected later; a right ``#### N``
followed by a wrong box; markdown headings that start with a number.

The committed corpus is made from the committed seed (100 GSM8K train pairs, MIT, openai/grade-school-math):

    python scripts/make_answer_corpus.py                      # writes tests/data/answer_corpus.jsonl
    python scripts/make_answer_corpus.py --gsm8k path/to/train.jsonl --limit 1000 --out /tmp/big.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED_FILE = ROOT / "tests" / "data" / "gsm8k_seed.jsonl"
CORPUS_FILE = ROOT / "tests" / "data" / "answer_corpus.jsonl"
DEFAULT_SEED = 20261126
WRONG_SHARE = 0.35

_CALC = re.compile(r"<<[^<>]*>>")
_CALC_RESULT = re.compile(r"<<[^<>=]*=([^<>]*)>>")


class CorpusError(Exception):
    """The seed data cannot be turned into a corpus."""


@dataclass(frozen=True)
class Pair:
    """One GSM8K question with its worked steps, gold value and the intermediate results."""

    question: str
    steps: tuple[str, ...]
    gold: Decimal
    intermediates: tuple[Decimal, ...]


def _dec(text: str) -> Decimal:
    return Decimal(text.replace(",", "").replace("$", "").strip())


def fmt(d: Decimal) -> str:
    """Plain text of a value: no exponent, no trailing zeros (``72``, ``0.5``, ``-3``)."""
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def thousands(d: Decimal, sep: str = ",") -> str:
    """``1250`` -> ``1,250`` (``sep`` may be ``{,}`` or ``\\,``); non-integers unchanged."""
    if d != d.to_integral_value() or abs(d) < 1000:
        return fmt(d)
    return f"{int(d):,}".replace(",", sep)


def read_pairs(path: Path, limit: int | None) -> list[Pair]:
    pairs = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            body, _, gold = row["answer"].rpartition("####")
            if not body:
                raise CorpusError(f"{path}: an answer without '#### N': {row['answer'][:80]!r}")
            steps = tuple(s.strip() for s in _CALC.sub("", body).strip().splitlines() if s.strip())
            inter = []
            for m in _CALC_RESULT.finditer(body):
                try:
                    inter.append(_dec(m.group(1)))
                except ArithmeticError:
                    continue
            pairs.append(Pair(row["question"], steps, _dec(gold), tuple(inter)))
            if limit is not None and len(pairs) >= limit:
                break
    if not pairs:
        raise CorpusError(f"{path}: no question/answer pairs")
    return pairs


def wrong_value(pair: Pair, rng: random.Random) -> Decimal:
    """A plausible wrong final answer: an intermediate result, or the gold off by a small amount."""
    options = [d for d in pair.intermediates if d != pair.gold]
    if options and rng.random() < 0.5:
        return rng.choice(options)
    delta = Decimal(rng.choice([1, 2, 4, 5, 10, -1, -2, -5]))
    return pair.gold + delta if pair.gold + delta != 0 else pair.gold + 3


# --- the styles: each writes a completion whose final stated answer is ``v`` -------------------

Style = Callable[[Pair, Decimal, random.Random], str]


def _reasoning(pair: Pair) -> str:
    return "\n".join(pair.steps)


def _numbered(pair: Pair) -> str:
    return "\n".join(f"{i}. {s}" for i, s in enumerate(pair.steps, 1))


def _think(pair: Pair, rng: random.Random) -> str:
    opener = rng.choice(["Okay, let's see.", "Alright, so I need to figure this out.", "Hmm, let me think."])
    check = rng.choice(["Wait, let me double-check that.", "Let me verify.", "That seems right."])
    return f"<think>\n{opener} {pair.question}\n\n{_reasoning(pair)}\n\n{check}\n</think>"


def gsm8k_hashes(pair: Pair, v: Decimal, rng: random.Random) -> str:
    return f"{_reasoning(pair)}\n#### {thousands(v) if rng.random() < 0.5 else fmt(v)}"


def r1_boxed(pair: Pair, v: Decimal, rng: random.Random) -> str:
    return f"{_think(pair, rng)}\n\n{_reasoning(pair)}\n\n**Final Answer**\n\\[\n\\boxed{{{fmt(v)}}}\n\\]"


def r1_unclosed(pair: Pair, v: Decimal, rng: random.Random) -> str:
    lines = "\n".join(pair.steps)
    return f"<think>\nOkay, let's see. {pair.question}\n\n{lines}\nSo the answer is \\boxed{{{fmt(v)}}}."


def r1_unclosed_truncated(pair: Pair, v: Decimal, rng: random.Random) -> str:
    # cut mid-thought: the last number written is the stated value, no marker at all
    return f"<think>\nHmm, let me think. {pair.question}\n\n{_reasoning(pair)}\nSo far that gives {fmt(v)}"


def r1_markdown_summary(pair: Pair, v: Decimal, rng: random.Random) -> str:
    steps = "\n\n".join(f"### Step {i}: {'Compute' if i > 1 else 'Start'}\n{s}" for i, s in enumerate(pair.steps, 1))
    return f"{_think(pair, rng)}\n\n{steps}\n\n#### Final Answer\nThe answer is $\\boxed{{{thousands(v, '{,}')}}}$."


def markdown_numbered_heading(pair: Pair, v: Decimal, rng: random.Random) -> str:
    # "#### 2. Result": a heading that starts with a number, the answer boxed below it
    return (
        f"#### 1. Understand the problem\n{pair.question}\n\n#### 2. Result\n{_reasoning(pair)}\n\n"
        f"**Final Answer**\n\\[\n\\boxed{{{fmt(v)}}}\n\\]"
    )


def boxed_thousands(pair: Pair, v: Decimal, rng: random.Random) -> str:
    sep = rng.choice(["{,}", ",", "\\,"])
    return f"{_reasoning(pair)}\n\nTherefore the total is $\\boxed{{{thousands(v, sep)}}}$."


def boxed_dfrac(pair: Pair, v: Decimal, rng: random.Random) -> str:
    k = rng.choice([2, 4, 5])
    return f"{_reasoning(pair)}\n\nSo the result is \\(\\boxed{{\\dfrac{{{fmt(v * k)}}}{{{k}}}}}\\)."


def boxed_text_unit(pair: Pair, v: Decimal, rng: random.Random) -> str:
    unit = rng.choice(["dollars", "apples", "minutes", "miles", "cookies"])
    return f"{_reasoning(pair)}\n\nThe final answer is $\\boxed{{{fmt(v)} \\text{{ {unit}}}}}$."


def boxed_dollar(pair: Pair, v: Decimal, rng: random.Random) -> str:
    return f"{_reasoning(pair)}\n\nShe ends up with \\boxed{{\\${thousands(v)}}}."


def boxed_percent(pair: Pair, v: Decimal, rng: random.Random) -> str:
    return f"{_reasoning(pair)}\n\n\\[\n\\boxed{{{fmt(v)}\\%}}\n\\]"


def boxed_equation(pair: Pair, v: Decimal, rng: random.Random) -> str:
    return f"Let x be the answer.\n{_reasoning(pair)}\n\n\\boxed{{x = {fmt(v)}}}"


def boxed_sum(pair: Pair, v: Decimal, rng: random.Random) -> str:
    a = Decimal(rng.randint(1, 99))
    return f"{_reasoning(pair)}\n\nAdding the two parts: \\boxed{{{fmt(v - a)} + {fmt(a)}}}"


def boxed_scientific(pair: Pair, v: Decimal, rng: random.Random) -> str:
    return f"{_reasoning(pair)}\n\n\\[\n\\boxed{{{fmt(v * 10)} \\times 10^{{-1}}}}\n\\]"


def chat_prose(pair: Pair, v: Decimal, rng: random.Random) -> str:
    return f"Let's solve step by step.\n{_numbered(pair)}\n\nThe final answer is ${fmt(v)}$. I hope it is correct."


def answer_is_units(pair: Pair, v: Decimal, rng: random.Random) -> str:
    unit = rng.choice(["dollars", "hours", "pages", "eggs"])
    money = rng.random() < 0.5
    stated = f"${thousands(v)}" if money else f"{thousands(v)} {unit}"
    return f"{_reasoning(pair)}\nThe answer is {stated}."


def answer_colon_bold(pair: Pair, v: Decimal, rng: random.Random) -> str:
    return f"{_numbered(pair)}\n\n**Answer:** {fmt(v)}"


def json_then_prose(pair: Pair, v: Decimal, rng: random.Random) -> str:
    obj = json.dumps({"reasoning": " ".join(pair.steps), "answer": fmt(v)}, indent=4)
    fence = rng.random() < 0.5
    body = f"```json\n{obj}\n```" if fence else obj
    return f"{body}\n\nHere's how to solve it:\n\n{_numbered(pair)}"


def json_number(pair: Pair, v: Decimal, rng: random.Random) -> str:
    obj = json.dumps({"reasoning": " ".join(pair.steps), "answer": float(v) if v % 1 else int(v)})
    return f"Here is the solution:\n\n{obj}\n\nSo, in total: {fmt(rng.choice(pair.intermediates or (pair.gold,)))}."


def draft_hashes_then_box(pair: Pair, v: Decimal, rng: random.Random) -> str:
    draft = v + rng.choice([3, 5, -2])
    return f"{_reasoning(pair)}\n#### {fmt(draft)}\n\nWait, I made a mistake. Corrected:\n\\boxed{{{fmt(v)}}}"


def draft_answer_is_corrected(pair: Pair, v: Decimal, rng: random.Random) -> str:
    draft = v + rng.choice([1, 10, -4])
    return (
        f"{_reasoning(pair)}\nSo the answer is {fmt(draft)}.\n\nHmm, let me recheck the last step.\n"
        f"{pair.steps[-1] if pair.steps else ''}\nActually, the final answer is {fmt(v)}."
    )


def hashes_then_box(pair: Pair, v: Decimal, rng: random.Random) -> str:
    # the #### line is written first (maybe right), the box after it states ``v``
    first = pair.gold
    return f"{_reasoning(pair)}\n#### {fmt(first)}\n\nTo summarize: \\boxed{{{fmt(v)}}}"


def hashes_equation(pair: Pair, v: Decimal, rng: random.Random) -> str:
    a = Decimal(rng.randint(1, 50))
    return f"{_reasoning(pair)}\n#### {fmt(v - a)} + {fmt(a)} = {fmt(v)}"


@dataclass(frozen=True)
class StyleSpec:
    name: str
    write: Style
    wrong_share: float = WRONG_SHARE  # how often the stated value is wrong


STYLES: tuple[StyleSpec, ...] = (
    StyleSpec("gsm8k_hashes", gsm8k_hashes),
    StyleSpec("r1_boxed", r1_boxed),
    StyleSpec("r1_unclosed", r1_unclosed),
    StyleSpec("r1_unclosed_truncated", r1_unclosed_truncated),
    StyleSpec("r1_markdown_summary", r1_markdown_summary),
    StyleSpec("markdown_numbered_heading", markdown_numbered_heading),
    StyleSpec("boxed_thousands", boxed_thousands),
    StyleSpec("boxed_dfrac", boxed_dfrac),
    StyleSpec("boxed_text_unit", boxed_text_unit),
    StyleSpec("boxed_dollar", boxed_dollar),
    StyleSpec("boxed_percent", boxed_percent),
    StyleSpec("boxed_equation", boxed_equation),
    StyleSpec("boxed_sum", boxed_sum),
    StyleSpec("boxed_scientific", boxed_scientific),
    StyleSpec("chat_prose", chat_prose),
    StyleSpec("answer_is_units", answer_is_units),
    StyleSpec("answer_colon_bold", answer_colon_bold),
    StyleSpec("json_then_prose", json_then_prose),
    StyleSpec("json_number", json_number),
    StyleSpec("draft_hashes_then_box", draft_hashes_then_box),
    StyleSpec("draft_answer_is_corrected", draft_answer_is_corrected),
    StyleSpec("hashes_then_box", hashes_then_box, wrong_share=0.5),
    StyleSpec("hashes_equation", hashes_equation),
)


def rows(pairs: Sequence[Pair], seed: int, styles: Sequence[StyleSpec] = STYLES) -> Iterator[dict[str, object]]:
    """One labeled completion per (pair, style), in a fixed order; the same seed gives the same rows."""
    rng = random.Random(seed)
    for i, pair in enumerate(pairs):
        for spec in styles:
            wrong = rng.random() < spec.wrong_share
            value = wrong_value(pair, rng) if wrong else pair.gold
            completion = spec.write(pair, value, rng)
            yield {
                "id": f"{spec.name}-{i}",
                "class": spec.name,
                "question": pair.question,
                "gold": f"#### {fmt(pair.gold)}",
                "completion": completion,
                "value": fmt(value),
                "label": value == pair.gold,
            }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gsm8k", type=Path, default=SEED_FILE, help="GSM8K-format JSONL (question, answer '#### N')")
    ap.add_argument("--limit", type=int, default=None, help="use at most this many pairs")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=CORPUS_FILE)
    args = ap.parse_args(argv)
    try:
        pairs = read_pairs(args.gsm8k, args.limit)
    except (OSError, CorpusError, ValueError, ArithmeticError) as exc:
        print(f"make_answer_corpus: {exc}", file=sys.stderr)
        return 2
    out = list(rows(pairs, args.seed))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for row in out:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    labels = Counter(bool(r["label"]) for r in out)
    print(f"{len(out)} completions ({labels[True]} right, {labels[False]} wrong) from {len(pairs)} pairs -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
