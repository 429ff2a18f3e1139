"""The toy problem generator: seeded, arithmetically right, GSM8K-format, disjoint splits."""

from __future__ import annotations

import json
import random
import re
from fractions import Fraction

import pytest

from reward_service.regime_w.derived import evaluate_arithmetic
from shared_schemas.answer import answers_equal, gold_answer
from trainer.toy.problems import (
    TEMPLATES,
    Step,
    assign_styles,
    folded_expression,
    generate_problem,
    generate_problems,
    main,
    make_splits,
    write_splits,
)

# "a op b = <<a op b=c>>c" (annotated) or "a op b = c" (plain), as GSM8K writes its steps.
_ANNOTATED = re.compile(r"(\d+)([-+*/])(\d+) = <<(\d+)([-+*/])(\d+)=(\d+)>>(\d+)")
_PLAIN = re.compile(r"(\d+)([-+*/])(\d+) = (\d+)")


def _evaluate(a: str, op: str, b: str) -> Fraction:
    x, y = Fraction(int(a)), Fraction(int(b))
    return {"+": x + y, "-": x - y, "*": x * y, "/": x / y}[op]


def test_same_seed_same_problems_other_seed_other_problems() -> None:
    first = [p.to_json() for p in generate_problems(200, seed=7)]
    again = [p.to_json() for p in generate_problems(200, seed=7)]
    other = [p.to_json() for p in generate_problems(200, seed=8)]
    assert first == again
    assert first != other


def test_every_step_line_is_arithmetically_right_and_ends_with_the_answer() -> None:
    problems = generate_problems(1500, seed=3)
    for p in problems:
        lines = p.solution(annotate=True).split("\n")
        assert len(lines) == len(p.steps) + 1, p.solution()
        results = []
        for line in lines[:-1]:
            m = _ANNOTATED.search(line)
            assert m, f"no annotated equation in {line!r}"
            a, op, b, a2, op2, b2, c_note, c = m.groups()
            assert (a, op, b) == (a2, op2, b2), line
            assert c == c_note, line
            value = _evaluate(a, op, b)
            assert value.denominator == 1, f"inexact division in {line!r}"
            assert value == int(c) and int(c) >= 0, line
            results.append(int(c))
        assert lines[-1] == f"#### {p.answer_value}"
        assert results[-1] == p.answer_value
        # Every step after the first uses an earlier result or a number of the question.
        numbers_in_question = {int(n) for n in re.findall(r"\d+", p.question)}
        for s in p.steps[1:]:
            assert s.a in numbers_in_question | set(results) or s.b in numbers_in_question | set(results)


def test_plain_solutions_without_calculator_annotations() -> None:
    for p in generate_problems(300, seed=5):
        text = p.solution(annotate=False)
        assert "<<" not in text
        for line in text.split("\n")[:-1]:
            a, op, b, c = _PLAIN.search(line).groups()
            assert _evaluate(a, op, b) == int(c)


def test_gold_answer_extraction_equals_the_true_answer() -> None:
    for p in generate_problems(1000, seed=11):
        gold = gold_answer(p.solution())
        assert gold == str(p.answer_value)
        assert answers_equal(gold_answer(p.solution(annotate=False)), str(p.answer_value))


def test_all_templates_and_step_counts_are_reachable() -> None:
    rng = random.Random(0)
    for name in TEMPLATES:
        for k in (1, 2, 3):
            for _ in range(50):
                p = generate_problem(rng, steps=k, template=name)
                assert len(p.steps) == k and p.template == name
                assert p.question.endswith("?")
    seen = {(p.template, len(p.steps)) for p in generate_problems(2000, seed=1)}
    assert seen == {(t, k) for t in TEMPLATES for k in (1, 2, 3)}


def test_bad_requests_fail_clearly() -> None:
    with pytest.raises(ValueError, match="steps must be 1, 2 or 3"):
        generate_problem(random.Random(0), steps=4)
    with pytest.raises(ValueError, match="unknown template"):
        generate_problem(random.Random(0), template="space travel")


def test_splits_are_disjoint_and_stable() -> None:
    splits = make_splits(2, n_train=400, n_dev=60, n_test=60, n_pretrain=500)
    sizes = {name: len(ps) for name, ps in splits.items()}
    assert sizes == {"pretrain": 500, "train": 400, "dev": 60, "test": 60}
    questions = [{p.question for p in ps} for _, ps in splits.items()]
    assert sum(len(q) for q in questions) == 1020  # no duplicate inside or across splits
    # Adding pretraining problems leaves the trainer's splits unchanged.
    without = make_splits(2, n_train=400, n_dev=60, n_test=60)
    assert [p.question for p in without.dev] == [p.question for p in splits.dev]
    assert without.pretrain == []


def test_cli_writes_gsm8k_jsonl_that_the_trainer_loads(tmp_path) -> None:
    out = tmp_path / "toy"
    assert (
        main(
            [
                "--out",
                str(out),
                "--seed",
                "4",
                "--n-train",
                "50",
                "--n-dev",
                "10",
                "--n-test",
                "10",
                "--n-pretrain",
                "20",
            ]
        )
        == 0
    )
    for name, n in (("train", 50), ("dev", 10), ("test", 10), ("pretrain", 20)):
        rows = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == n
        assert all(set(r) == {"question", "answer"} for r in rows)
        assert all(r["answer"].split("\n")[-1].startswith("#### ") for r in rows)
    meta = json.loads((out / "TOY_PROBLEMS.json").read_text())
    assert meta["seed"] == 4 and meta["n_train"] == 50

    from trainer.data import load_problems
    from trainer.prompts import format_target

    problems = load_problems(str(out / "train.jsonl"), split="train")
    assert len(problems) == 50
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert problems[0].question == first["question"]
    assert problems[0].gold == gold_answer(first["answer"])
    target = format_target(problems[0].solution)
    assert "<<" not in target and target.split("\n")[-1] == f"#### {problems[0].gold}"


def test_write_splits_is_deterministic(tmp_path) -> None:
    write_splits(tmp_path / "a", 9, n_train=30, n_dev=5, n_test=5)
    write_splits(tmp_path / "b", 9, n_train=30, n_dev=5, n_test=5)
    for name in ("train", "dev", "test"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    assert not (tmp_path / "a" / "pretrain.jsonl").exists()


def test_one_line_solutions_fold_every_step_into_one_right_expression() -> None:
    problems = generate_problems(1500, seed=13)
    for p in problems:
        text = p.solution(annotate=False, style="one_line")
        lines = text.split("\n")
        assert len(lines) == 2 and lines[-1] == f"#### {p.answer_value}", text
        expr, value = re.search(r"([-+*/()\d]+) = (\d+)", lines[0]).groups()
        assert int(value) == p.answer_value
        # exact, by the scorer's own evaluator: s_path reads folded lines as it reads steps
        assert evaluate_arithmetic(expr) == p.answer_value, text
        if len(p.steps) > 1:
            # one operator per step: nothing dropped, nothing computed twice
            assert expr.count("*") + expr.count("/") + expr.count("+") + expr.count("-") == len(p.steps), text
        else:
            assert text == p.solution(annotate=False, style="steps")
        annotated = p.solution(annotate=True, style="one_line")
        assert f"<<{expr}={value}>>{value}" in annotated
        assert gold_answer(annotated) == str(p.answer_value)


def test_folded_expression_parenthesises_only_where_precedence_needs_it() -> None:
    assert folded_expression([Step(3, "+", 4, "{eq}"), Step(7, "*", 2, "{eq}")]) == "(3+4)*2"
    assert folded_expression([Step(3, "*", 4, "{eq}"), Step(12, "+", 2, "{eq}")]) == "3*4+2"
    assert folded_expression([Step(3, "+", 4, "{eq}"), Step(20, "-", 7, "{eq}")]) == "20-(3+4)"
    assert folded_expression([Step(6, "*", 4, "{eq}"), Step(48, "/", 24, "{eq}")]) == "48/(6*4)"
    assert folded_expression([Step(2, "*", 5, "{eq}"), Step(3, "*", 4, "{eq}"), Step(10, "+", 12, "{eq}")]) == "2*5+3*4"
    # a value used once is not substituted twice
    assert folded_expression([Step(2, "+", 3, "{eq}"), Step(5, "+", 5, "{eq}")]) == "2+3+5"


def test_styles_are_assigned_at_the_share_asked_for_without_changing_the_questions() -> None:
    plain = make_splits(5, n_train=2000, n_dev=50, n_test=50)
    mixed = make_splits(5, n_train=2000, n_dev=50, n_test=50, one_line_share=0.5)
    assert [p.question for p in plain.train] == [p.question for p in mixed.train]
    assert {p.style for p in plain.train} == {"steps"}
    share = sum(p.style == "one_line" for p in mixed.train) / len(mixed.train)
    assert 0.45 < share < 0.55
    assert mixed.train == make_splits(5, n_train=2000, n_dev=50, n_test=50, one_line_share=0.5).train
    separate = make_splits(
        5, n_train=2000, n_dev=50, n_test=50, n_pretrain=300, one_line_share=0.5, pretrain_one_line_share=0.0
    )
    assert separate.train == mixed.train and {p.style for p in separate.pretrain} == {"steps"}
    assert {p.style for p in assign_styles(plain.train[:50], 1.0, 0)} == {"one_line"}
    with pytest.raises(ValueError, match="one_line_share"):
        assign_styles(plain.train[:5], 1.5, 0)
    with pytest.raises(ValueError, match="unknown style"):
        plain.train[0].solution(style="poem")


def test_cli_writes_the_style_share(tmp_path) -> None:
    assert (
        main(
            [
                "--out",
                str(tmp_path),
                "--seed",
                "1",
                "--n-train",
                "400",
                "--n-dev",
                "5",
                "--n-test",
                "5",
                "--one-line-share",
                "1.0",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert all(len(r["answer"].split("\n")) == 2 for r in rows)
    assert json.loads((tmp_path / "TOY_PROBLEMS.json").read_text())["one_line_share"] == 1.0


def test_number_scale_shrinks_the_numbers_and_keeps_every_problem_valid() -> None:
    full = generate_problems(1500, seed=17)
    half = generate_problems(1500, seed=17, number_scale=0.5)

    def biggest(ps) -> int:
        return max(max(s.a, s.b, s.result) for p in ps for s in p.steps)

    def mean_number(ps) -> float:
        numbers = [int(n) for p in ps for n in re.findall(r"\d+", p.question)]
        return sum(numbers) / len(numbers)

    assert mean_number(half) < 0.75 * mean_number(full)
    assert biggest(half) < biggest(full)
    for p in half:  # exact divisions, non-negative results, and solutions that still add up
        assert all(s.result >= 0 for s in p.steps)
        assert gold_answer(p.solution()) == str(p.answer_value)
    with pytest.raises(ValueError, match="number_scale"):
        generate_problem(random.Random(0), number_scale=0.0)
    with pytest.raises(ValueError, match="number_scale"):
        generate_problems(3, seed=0, number_scale=1.5)
