"""The answer-format contract (DESIGN §2): a table of real-looking completions, then properties."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared_schemas.answer import (
    SOURCES,
    ParsedAnswer,
    answers_equal,
    extract_answer,
    gold_answer,
    is_answer_form,
    normalize_answer,
    normalize_number,
    parse_answer,
)

R1_RIGHT = (
    "<think>\nOkay, so Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and bakes muffins "
    "with 4. So 16 - 3 - 4 = 9 eggs left. Wait, maybe the answer is 9? No, she sells each for $2, "
    "so 9 * 2 = 18.\n</think>\n\nJanet sells 16 - 3 - 4 = 9 eggs a day at $2 each.\n\n"
    "**Final Answer**\n\\boxed{18}"
)

# (id, completion, value, format_ok, source)
CASES: list[tuple[str, str, str | None, bool, str]] = [
    # --- GSM8K gold solutions and #### answers
    (
        "gsm8k-gold",
        "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
        "72",
        True,
        "hashes",
    ),
    ("hashes-thousands", "Total cost: 1,000 + 234 = 1,234 dollars.\n#### 1,234", "1234", True, "hashes"),
    ("hashes-dollar", "She earned $10.\n#### $10", "10", True, "hashes"),
    ("hashes-negative", "The temperature fell below zero.\n#### -5", "-5", True, "hashes"),
    ("hashes-decimal-trailing-zero", "#### 18.0", "18", True, "hashes"),
    ("hashes-units-period", "#### 18 dollars.", "18", True, "hashes"),
    ("hashes-last-wins", "#### 5\nwait, that was wrong.\n#### 7", "7", True, "hashes"),
    ("hashes-bold", "#### **42**", "42", True, "hashes"),
    ("hashes-equation", "#### 3 * 6 = 18", "18", True, "hashes"),
    (
        "hashes-heading-is-not-an-answer",
        "#### Step 2: Compute the eggs left\n16 - 3 - 4 = 9\nThe answer is 9.",
        "9",
        True,
        "answer_is",
    ),
    ("hashes-empty-then-boxed", "####\n\\boxed{12}", "12", True, "boxed"),
    # --- \boxed{}
    ("boxed-plain", "So the total is \\boxed{72}.", "72", True, "boxed"),
    ("boxed-frac", "Each gets \\boxed{\\frac{3}{4}} of a pizza.", "0.75", True, "boxed"),
    ("boxed-dfrac-negative", "$\\boxed{-\\dfrac{1}{2}}$", "-0.5", True, "boxed"),
    ("boxed-text-units", "\\boxed{\\text{18 dollars}}", "18", True, "boxed"),
    ("boxed-dollar-escaped", "The answer: \\boxed{\\$18}", "18", True, "boxed"),
    ("boxed-latex-thousands", "\\boxed{1{,}234}", "1234", True, "boxed"),
    ("boxed-percent", "\\boxed{25\\%}", "25", True, "boxed"),
    ("boxed-last-wins", "First \\boxed{5}, then corrected: \\boxed{6}", "6", True, "boxed"),
    ("boxed-equation", "\\boxed{x = 15}", "15", True, "boxed"),
    ("boxed-nonnumeric", "\\boxed{\\text{Yes}}", "yes", True, "boxed"),
    ("boxed-unclosed-falls-back", "so \\boxed{12 and then the text stops", "12", False, "last_number"),
    ("boxed-beats-answer-is", "The answer is 5. Actually \\boxed{6}", "6", True, "boxed"),
    ("hashes-beat-boxed", "\\boxed{6}\n#### 7", "7", True, "hashes"),
    # --- "the (final) answer is"
    ("answer-is-dollar-period", "She makes 9 * 2 = 18 dollars. The answer is $18.", "18", True, "answer_is"),
    ("final-answer-colon", "The final answer is: 72", "72", True, "answer_is"),
    ("answer-colon-bold", "**Answer:** Janet makes **$18** every day.", "18", True, "answer_is"),
    ("final-answer-bold-heading", "**Final Answer**: 240", "240", True, "answer_is"),
    ("answer-is-decimal", "The answer is 0.5.", "0.5", True, "answer_is"),
    ("answer-is-equation", "The answer is 9 * 2 = 18.", "18", True, "answer_is"),
    ("answer-is-sentence-cut", "The answer is 5, not 6 = 3 + 3.", "5", True, "answer_is"),
    ("answer-is-last-stated-wins", "I thought the answer is 5. Rechecking, the answer is 6.", "6", True, "answer_is"),
    (
        "answer-is-without-number-skipped",
        "The answer is 8. Is the answer is clear? The answer is...",
        "8",
        True,
        "answer_is",
    ),
    ("answer-is-unicode-minus", "The answer is −7.", "-7", True, "answer_is"),
    ("answer-is-en-dash", "The final answer is –3", "-3", True, "answer_is"),
    ("answer-is-fraction", "The answer is 3/4 of a cup.", "0.75", True, "answer_is"),
    ("answer-is-exponent", "The answer is 1e3.", "1000", True, "answer_is"),
    ("answer-is-percent", "The answer is 50%.", "50", True, "answer_is"),
    ("answer-is-cm", "The answer is 5 cm.", "5", True, "answer_is"),
    ("answer-is-comma-thousands", "The answer is 12,500 dollars.", "12500", True, "answer_is"),
    ("answer-is-next-line", "The final answer is:\n\n42", "42", True, "answer_is"),
    # --- DeepSeek-R1 <think> blocks
    ("r1-boxed-after-think", R1_RIGHT, "18", True, "boxed"),
    (
        "r1-think-holds-other-number",
        "<think>\nThe answer is 20? 48 + 24 = 72.\n</think>\nThe answer is 72.",
        "72",
        True,
        "answer_is",
    ),
    # no marker after </think>: the whole text is the scope, and its last marker wins (DESIGN §2.1)
    (
        "r1-after-think-no-marker",
        "<think>I think the answer is 20.</think>\nShe earns 18 dollars a day",
        "20",
        True,
        "answer_is",
    ),
    (
        "r1-no-marker-anywhere",
        "<think>9 * 2 = 18</think>\nShe earns 18 dollars a day, 7 days",
        "7",
        False,
        "last_number",
    ),
    (
        "r1-nothing-after-think",
        "<think>16 - 3 - 4 = 9, 9 * 2 = 18, so the answer is 18.</think>",
        "18",
        True,
        "answer_is",
    ),
    (
        "r1-never-closed-last-number",
        "<think>\nJanet has 16 eggs. She eats 3 and bakes with 4, so 16 - 3 - 4 = 9. Each costs $2, so 9 * 2",
        "2",
        False,
        "last_number",
    ),
    (
        "r1-never-closed-stated",
        "<think>\nSo 48 / 2 = 24 in May, and 48 + 24 = 72. The answer is 72. Let me double-check: 24 + 48",
        "72",
        True,
        "answer_is",
    ),
    ("r1-two-think-closes", "<think>a</think> 5 <think>b</think> #### 6", "6", True, "hashes"),
    ("r1-hashes-after-think", "<think>\n48/2 = 24\n</think>\n48 + 24 = 72\n#### 72", "72", True, "hashes"),
    # --- answer contract v2 (issue 9): the last marker wins, X alone on its line, X evaluated
    ("heading-starting-with-number", "#### 2. Result\n48 + 52 = 100\n\\boxed{100}", "100", True, "boxed"),
    ("heading-step-colon", "#### Step 3: total\n16 - 3 - 4 = 9", "9", False, "last_number"),
    ("heading-solution", "#### Solution\nThe answer is 9.", "9", True, "answer_is"),
    ("heading-capitalized-word", "#### 3 Results\nSo \\boxed{12}", "12", True, "boxed"),
    ("hashes-not-alone", "#### 5 apples and then 3 more\nso 8", "8", False, "last_number"),
    ("hashes-unit-word", "#### 720 square feet", "720", True, "hashes"),
    ("draft-hashes-corrected-by-box", "#### 105\nWait, that is wrong. Corrected:\n\\boxed{100}", "100", True, "boxed"),
    ("hashes-right-then-box-wrong", "#### 100\nTo summarize: \\boxed{104}", "104", True, "boxed"),
    ("box-then-answer-is", "\\boxed{6}\nSo the answer is 7.", "7", True, "answer_is"),
    ("boxed-sum-evaluated", "\\boxed{99 + 1}", "100", True, "boxed"),
    ("boxed-scientific", "\\boxed{1000 \\times 10^{-1}}", "100", True, "boxed"),
    ("boxed-cdot", "\\boxed{25 \\cdot 4}", "100", True, "boxed"),
    ("boxed-exponent-notation", "\\boxed{1.25 \\times 10^{3}}", "1250", True, "boxed"),
    ("boxed-dfrac-of-sum", "\\boxed{\\dfrac{150 + 50}{2}}", "100", True, "boxed"),
    ("boxed-thin-space-thousands", "\\boxed{1\\,250}", "1250", True, "boxed"),
    ("boxed-in-display-math", "**Final Answer**\n\\[\n\\boxed{1{,}250}\n\\]", "1250", True, "boxed"),
    ("boxed-unreadable-left-out", "The answer is 12.\n\\boxed{12 + }", "12", True, "answer_is"),
    ("hashes-expression", "#### 99 + 1", "100", True, "hashes"),
    (
        "chat-hope-correct",
        "Let's see: 8 * 9 = 72.\nThe final answer is $72$. I hope it is correct.",
        "72",
        True,
        "answer_is",
    ),
    ("answer-is-expression", "The answer is 40 * 3 / 2.", "60", True, "answer_is"),
    (
        "json-answer-then-prose",
        '{"reasoning": "120 * 3 + 6 = 366", "answer": "366"}\n\n1. 60 * 3 = 180\n2. 180 * 2 = 360',
        "366",
        True,
        "json",
    ),
    ("json-answer-number", 'Here it is:\n{"reasoning": "2 + 2", "answer": 4.5}\nSo, 12 in all.', "4.5", True, "json"),
    ("json-answer-money", '```json\n{"answer": "$1,250.00"}\n```', "1250", True, "json"),
    ("json-answer-expression", '{"answer": "(11 * 3) + (8 * 4)"}', "65", True, "json"),
    ("json-answer-quoted", '{"answer": "\\"42\\""}', "42", True, "json"),
    ("json-answer-prose", '{"answer": "She makes $18 every day."}', "18", True, "json"),
    ("json-answer-spaced-thousands", '{"answer": "$9 500"}', "9500", True, "json"),
    ("json-second-block-wins", '{"answer": "42 - (15 + 18)"}\nSo:\n{"answer": "9"}', "9", True, "json"),
    ("json-answer-null-skipped", '{"answer": null}\nThe total is 5.', "5", False, "last_number"),
    # --- last-number fallback
    ("last-number-trailing-period", "So she has 12 apples left.", "12", False, "last_number"),
    ("last-number-subtraction-not-negative", "16-3-4", "4", False, "last_number"),
    ("last-number-negative", "The balance is now -40", "-40", False, "last_number"),
    ("last-number-decimal", "Each costs 2.50 and she buys 3 so 7.50", "7.5", False, "last_number"),
    ("last-number-comma-list", "the values are 1,2,3", "3", False, "last_number"),
    ("last-number-thousands", "The car costs $12,000", "12000", False, "last_number"),
    ("last-number-dollar", "She paid $5.", "5", False, "last_number"),
    ("last-number-leading-dot", "It costs .5 dollars", "0.5", False, "last_number"),
    ("last-number-trailing-zero", "Total 18.0", "18", False, "last_number"),
    # --- nothing at all
    ("no-number", "I am not sure how to solve this problem.", None, False, "none"),
    ("empty", "", None, False, "none"),
    ("only-think", "<think>\nHmm, let me think about this.\n</think>", None, False, "none"),
    ("answer-is-no-number", "The answer is unclear.", None, False, "none"),
]


@pytest.mark.parametrize(
    ("text", "value", "format_ok", "source"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_parse_answer_table(text: str, value: str | None, format_ok: bool, source: str) -> None:
    parsed = parse_answer(text)
    assert parsed == ParsedAnswer(value, format_ok, source), f"{text!r} -> {parsed}"
    assert extract_answer(text) == value


def test_table_is_large_and_ids_unique() -> None:
    assert len(CASES) >= 40
    assert len({case[0] for case in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$1,234.50", "1234.5"),
        ("50%", "50"),
        ("3/4", "0.75"),
        ("1e3", "1000"),
        ("18 dollars.", "18"),
        ("5 cm", "5"),
        ("18.0", "18"),
        ("18.", "18"),
        ("-5", "-5"),
        ("−5", "-5"),
        ("+7", "7"),
        ("0.10", "0.1"),
        ("-0", "0"),
        (".5", "0.5"),
        ("1/3", "0.3333333333333333333333333333"),
        ("2.5e-3", "0.0025"),
        ("1e40", "1E+40"),
        (" 72\n", "72"),
        ("1/0", None),
        ("abc", None),
        ("", None),
        ("5 apples and 3", None),
        ("1.2.3", None),
        ("1e99999", None),
    ],
)
def test_normalize_number(text: str, expected: str | None) -> None:
    assert normalize_number(text) == expected


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("72", "72.0", True),
        ("#### 72", "72", False),  # answers_equal compares answers, not completions
        ("$1,234", "1234", True),
        ("0.75", "3/4", True),
        ("1000", "1e3", True),
        ("18 dollars", "18", True),
        ("1000000", "1000000.5", True),  # within the relative tolerance 1e-6
        ("100", "100.01", False),
        ("-5", "5", False),
        ("Yes", "yes.", True),
        ("yes", "no", False),
        ("0", "0.0", True),
        ("0", "0.0000001", False),
        (None, "1", False),
        ("1", None, False),
        ("", "", False),
    ],
)
def test_answers_equal(a: str | None, b: str | None, equal: bool) -> None:
    assert answers_equal(a, b) is equal
    assert answers_equal(b, a) is equal


@pytest.mark.parametrize(
    ("gold", "expected"),
    [
        ("#### 72", "72"),
        ("72", "72"),
        ("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n#### 10", "10"),
        ("#### 1,234", "1234"),
    ],
)
def test_gold_answer(gold: str, expected: str) -> None:
    assert gold_answer(gold) == expected


def test_gold_and_completion_go_through_the_same_path() -> None:
    assert answers_equal(gold_answer("#### 18"), extract_answer(R1_RIGHT))
    assert not answers_equal(gold_answer("#### 20"), extract_answer(R1_RIGHT))


# ---------------------------------------------------------------- properties


def _number_strings() -> st.SearchStrategy[str]:
    ints = st.integers(min_value=-(10**15), max_value=10**15)
    return st.one_of(
        ints.map(str),
        ints.map(lambda n: f"{n:,}"),
        ints.map(lambda n: f"${n}"),
        st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
        st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
        st.tuples(ints, st.integers(min_value=1, max_value=10**6)).map(lambda t: f"{t[0]}/{t[1]}"),
        ints.map(lambda n: f"{n}%"),
        ints.map(lambda n: f"{n}.0"),
    )


@settings(max_examples=300, deadline=None)
@given(st.one_of(_number_strings(), st.text()), st.one_of(_number_strings(), st.text()))
def test_answers_equal_is_symmetric(a: str, b: str) -> None:
    assert answers_equal(a, b) == answers_equal(b, a)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_number_strings(), st.text()))
def test_normalize_number_is_idempotent(x: str) -> None:
    once = normalize_number(x)
    if once is not None:
        assert normalize_number(once) == once


@settings(max_examples=300, deadline=None)
@given(st.one_of(_number_strings(), st.text()))
def test_normalize_answer_is_idempotent(x: str) -> None:
    once = normalize_answer(x)
    if once is not None:
        assert normalize_answer(once) == once


@settings(max_examples=300, deadline=None)
@given(_number_strings())
def test_every_number_string_equals_itself(x: str) -> None:
    assert normalize_number(x) is not None, x
    assert answers_equal(x, x)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_written_forms_of_an_integer_agree(n: int) -> None:
    assert answers_equal(f"{n:,}", str(n))
    assert extract_answer(f"So the result is clear.\n#### {n:,}") == str(n)
    assert extract_answer(f"\\boxed{{{n}}}") == str(n)


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=3, allow_nan=False))
def test_normalized_number_has_the_same_value(d: Decimal) -> None:
    normalized = normalize_number(str(d))
    assert normalized is not None
    assert Decimal(normalized) == d


_ANSWERY = st.sampled_from(
    [
        "####",
        "\\boxed{",
        "}",
        "{",
        "</think>",
        "<think>",
        "The answer is",
        "answer:",
        "=",
        "$",
        "1,234",
        "-",
        "−",
        "3/4",
        "1e3",
        ".",
        ",",
        "%",
        "\\frac{",
        "\\text{",
        "\n",
        " ",
        "72",
        "0",
        '"answer": ',
        '"',
        "\\times",
        "10^{",
        "+",
        "*",
        "**",
        "\\[",
        "\\dfrac{",
        "{,}",
        "^",
        "32",
        "9999999999",
        "(",
        ")",
        "\\cdot",
        "Answer:",
        "dollars",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.lists(st.one_of(_ANSWERY, st.text(max_size=3))).map("".join)))
def test_extraction_never_raises(text: str) -> None:
    parsed = parse_answer(text)
    assert isinstance(parsed, ParsedAnswer)
    assert parsed.source in SOURCES
    assert (parsed.value is None) == (parsed.source == "none")
    assert parsed.format_ok == (parsed.source not in {"last_number", "none"})
    if parsed.value is not None:
        assert normalize_answer(parsed.value) == parsed.value


# ---------------------------------------------------------------- pathological inputs
# Each 200k-char input must parse to the right result. Parsing is linear (timings are in
# bench/answer_agreement.py, ~0.01-0.4 s each); the timeout only stops a quadratic regression from
# hanging the suite.

PATHOLOGICAL: dict[str, tuple[str, str | None]] = {
    "unclosed-boxes": ("\\boxed{" * 30_000, None),
    "comma-groups": ("1," * 100_000 + "1111", "1111"),
    "hashes-headings": ("#### Step\n" * 20_000, None),
    "hashes-numbered-headings": ("#### 2. Result\n" * 15_000, "2"),
    "answer-is-no-number": ("the answer is " * 15_000, None),
    "json-keys-no-number": ('"answer": "x", ' * 15_000, None),
    "spaces-after-number": ("7" + " " * 200_000 + "x", "7"),
    "frac-unclosed": ("\\boxed{\\frac{" + " " * 200_000 + "}", None),
    "fractions": ("1 / " * 50_000, "1"),
    "digits": ("9" * 200_000, None),
    "think-closes": ("</think>" * 25_000, None),
    "minus-signs": ("-" * 100_000 + "5" * 100_000, None),
    "nested-braces": ("\\boxed{" + "{" * 100_000 + "}" * 100_000 + "}", None),
    "nested-boxes-closed": ("\\boxed{" * 25_000 + "1" + "}" * 25_000, "1"),
    "unreadable-boxes": ("\\boxed{1 + }" * 20_000, "1"),
    "many-boxes": ("\\boxed{1}" * 25_000, "1"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_200k_inputs(name: str) -> None:
    text, value = PATHOLOGICAL[name]
    assert len(text) >= 200_000
    parsed = parse_answer(text)
    assert parsed.value == value, f"{name}: {parsed}"
    normalize_answer(text[:200_000])


# --- issue 22: powers, the answer form, bounded caches ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "format_ok"),
    [
        ("#### 10^1000", None, False),  # before: 1000 (the exponent, read by the fallback)
        ("#### 10^33", None, False),  # past the arithmetic parser's exponent limit: before 33
        ("\\boxed{10^{1000}}", None, False),  # before: 1000
        ("The answer is 10^1000.", None, False),  # before: 10 (the base, the stated answer's first number)
        ("#### 10**1000", None, False),  # before: 101000 ("**" dropped as markdown bold)
        ("It costs 5 dollars, about 10^{-40} of a fortune", "5", False),  # the last number not in a power
        ("#### 2**3", "8", True),
        ("#### 10^32", "1E+32", True),
        ("#### 1e1000", "1E+1000", True),  # scientific notation stays readable
        ("The area is 25 m^2", "25", False),
        ("The answer is **72**.", "72", True),  # markdown bold is still bold
    ],
)
def test_a_power_it_cannot_read_is_no_answer(text: str, value: str | None, format_ok: bool) -> None:
    parsed = parse_answer(text)
    assert (parsed.value, parsed.format_ok) == (value, format_ok)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("72", True),
        ("-0.5", True),
        ("1E+32", True),
        ("1.234567890123456789012345678E+5000", True),
        ("yes", True),
        ("tuesday", True),
        ("new york", True),
        ("o'clock", True),
        ("you are a careful", False),  # three words
        ("supercalifragilisticexpialidocious", False),  # longer than an answer
        ("a, b", False),
        ("", False),
        (None, False),
    ],
)
def test_answer_form(value: str | None, ok: bool) -> None:
    assert is_answer_form(value) is ok


def test_answer_form_of_parsed_answers() -> None:
    """Every number parse_answer reads is in answer form; a boxed paragraph is read, but is not."""
    for _, text, value, _, _ in CASES:
        if value is not None and normalize_number(value) == value:
            assert is_answer_form(parse_answer(text).value), text
    boxed = parse_answer("\\boxed{You are a careful math tutor. Explain every step.}").value
    assert boxed is not None and not is_answer_form(boxed)


def _retained_bytes(calls: Callable[[], None]) -> int:
    """Bytes still allocated after ``calls`` (which builds its own inputs and keeps no reference)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        calls()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_normalize_number_does_not_keep_long_numbers() -> None:
    """400 distinct 100,000-digit numbers: before, each stayed in the 65,536-entry cache (+38 MiB here)."""

    def calls() -> None:
        for i in range(400):
            assert normalize_number(f"{i}.{'7' * 100_000}") is not None

    assert _retained_bytes(calls) < 2 * 1024 * 1024


def test_normalize_number_cache_is_bounded_in_bytes() -> None:
    """The worst short keys (48 astral characters, the longest kept) fill the cache to its entry bound."""

    def calls() -> None:
        for i in range(40_000):
            normalize_number(f"{i:06d}" + "\U0001d7d8" * 42)

    assert _retained_bytes(calls) < 24 * 1024 * 1024


def test_parse_answer_cache_is_bounded_in_bytes() -> None:
    """1,000 distinct 16,000-character astral texts (62 MiB as Python holds them): before, all 1,000 stayed
    in the 8,192-entry cache; now the cache keeps at most its byte bound (32 MiB)."""

    def calls() -> None:
        for i in range(1000):
            parse_answer(f"{i} " + "\U0001f600" * 16_000 + " #### 7")

    assert _retained_bytes(calls) < 34 * 1024 * 1024
