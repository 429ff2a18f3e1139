"""A seeded generator of GSM8K-style arithmetic word problems (the offline toy world).

Each problem takes 1–3 arithmetic steps (``+ - * /`` with exact integer results) and comes from
one of several story templates (shopping, ages, distances, sharing, baking, savings). Solutions
are written in GSM8K's own format — one ``... a*b = <<a*b=c>>c ...`` line per step (the calculator
annotation is optional) and a last line ``#### c`` — so every trainer stage reads the files
exactly as it reads GSM8K.

Like GSM8K, whose solutions come from many annotators, the solutions are written in two styles:
``"steps"`` (one line per step, every intermediate result written out) and ``"one_line"`` (the
whole computation folded into one expression, ``(12+3)*2+5 = 35``; the same as ``"steps"`` for a
one-step problem). ``one_line_share`` sets the share of problems written the second way. Both are
correct GSM8K solutions; a small model computes the folded multi-step expression far less reliably,
which is what the RL stages of the toy world have to discover (docs/toy-world.md).

``python3 -m trainer.toy.problems --out DIR --seed S`` writes ``DIR/train.jsonl``,
``DIR/dev.jsonl`` and ``DIR/test.jsonl`` (``{"question", "answer"}`` per line); no question
appears in two splits.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GENERATOR_VERSION",
    "STYLES",
    "Step",
    "ToyProblem",
    "ToySplits",
    "generate_problem",
    "generate_problems",
    "assign_styles",
    "folded_expression",
    "make_splits",
    "write_jsonl",
    "write_splits",
    "main",
]

#: Bump when the generator's output for a given seed changes (it is part of cache keys).
GENERATOR_VERSION = "2"

#: Solution styles: one line per step, or the whole computation in one expression.
STYLES = ("steps", "one_line")

_OPS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a // b,
}


@dataclass(frozen=True, slots=True)
class Step:
    """One arithmetic step ``a op b = result`` and the sentence that carries it.

    ``text`` holds ``{eq}`` where the equation goes, e.g. ``"She spends {eq} dollars."``.
    """

    a: int
    op: str
    b: int
    text: str

    @property
    def result(self) -> int:
        if self.op == "/" and (self.b == 0 or self.a % self.b):
            raise ValueError(f"{self.a}/{self.b} is not an exact integer division")
        return _OPS[self.op](self.a, self.b)

    def line(self, *, annotate: bool) -> str:
        expr = f"{self.a}{self.op}{self.b}"
        value = self.result
        eq = f"{expr} = <<{expr}={value}>>{value}" if annotate else f"{expr} = {value}"
        return self.text.format(eq=eq)


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def folded_expression(steps: Sequence[Step]) -> str:
    """The steps as ONE expression that evaluates (left to right, usual precedence) to the last
    step's result: an operand equal to an earlier step's (not yet used) result is replaced by that
    step's expression, in parentheses where precedence needs them."""
    exprs: list[tuple[str, int]] = []  # (expression, precedence of its top operator)
    unused: list[int] = []  # indices of earlier steps whose result is not consumed yet

    def operand(value: int, parent_op: str, right: bool) -> str:
        for j in reversed(unused):
            if steps[j].result == value:
                unused.remove(j)
                text, prec = exprs[j]
                parent = _PRECEDENCE[parent_op]
                if prec < parent or (right and prec == parent and parent_op in "-/"):
                    return f"({text})"
                return text
        return str(value)

    for i, s in enumerate(steps):
        left = operand(s.a, s.op, right=False)
        right = operand(s.b, s.op, right=True)
        exprs.append((f"{left}{s.op}{right}", _PRECEDENCE[s.op]))
        unused.append(i)
    return exprs[-1][0]


@dataclass(frozen=True, slots=True)
class ToyProblem:
    """A generated problem: the question, its steps, the true answer, and how its solution is
    written (``style``, one of :data:`STYLES`)."""

    question: str
    steps: tuple[Step, ...]
    template: str
    style: str = "steps"

    @property
    def answer_value(self) -> int:
        return self.steps[-1].result

    def solution(self, *, annotate: bool = True, style: str | None = None) -> str:
        style = style or self.style
        if style == "steps" or len(self.steps) == 1:
            lines = [s.line(annotate=annotate) for s in self.steps]
        elif style == "one_line":
            expr, value = folded_expression(self.steps), self.answer_value
            eq = f"{expr} = <<{expr}={value}>>{value}" if annotate else f"{expr} = {value}"
            lines = [self.steps[-1].text.format(eq=eq)]
        else:
            raise ValueError(f"unknown style {style!r}; known: {STYLES}")
        lines.append(f"#### {self.answer_value}")
        return "\n".join(lines)

    def to_json(self, *, annotate: bool = True) -> dict[str, str]:
        return {"question": self.question, "answer": self.solution(annotate=annotate)}


# --------------------------------------------------------------------------------------------
# Vocabulary of the stories

_PEOPLE = [
    ("Anna", "she", "her"),
    ("Ben", "he", "his"),
    ("Carla", "she", "her"),
    ("David", "he", "his"),
    ("Emma", "she", "her"),
    ("Felix", "he", "his"),
    ("Grace", "she", "her"),
    ("Hugo", "he", "his"),
    ("Ivy", "she", "her"),
    ("Jack", "he", "his"),
    ("Kate", "she", "her"),
    ("Leo", "he", "his"),
    ("Mia", "she", "her"),
    ("Noah", "he", "his"),
    ("Olivia", "she", "her"),
    ("Paul", "he", "his"),
    ("Rosa", "she", "her"),
    ("Sam", "he", "his"),
    ("Tina", "she", "her"),
    ("Victor", "he", "his"),
]
_GOODS = [
    "apples",
    "pencils",
    "notebooks",
    "oranges",
    "stickers",
    "candles",
    "cookies",
    "toy cars",
    "books",
    "marbles",
    "balloons",
    "cupcakes",
    "muffins",
    "shirts",
    "plates",
    "cards",
]
_VEHICLES = ["car", "bus", "train", "cyclist", "truck", "boat", "runner", "van"]
_CONTAINERS = ["boxes", "bags", "baskets", "jars", "crates", "packs"]
_BAKED = ["cookies", "muffins", "rolls", "tarts", "cupcakes", "pies"]


@dataclass(slots=True)
class _Ctx:
    rng: random.Random
    number_scale: float = 1.0

    def person(self, exclude: Sequence[str] = ()) -> tuple[str, str, str]:
        while True:
            p = self.rng.choice(_PEOPLE)
            if p[0] not in exclude:
                return p

    def n(self, lo: int, hi: int) -> int:
        """A number in ``[lo, hi]``, the range shrunk towards ``lo`` by ``number_scale``."""
        return self.rng.randint(lo, max(lo, lo + round((hi - lo) * self.number_scale)))

    def pick(self, seq: Sequence[str]) -> str:
        return self.rng.choice(seq)


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


# Each template returns (question, steps) for a requested number of steps (1..3).
_Template = Callable[[_Ctx, int], tuple[str, list[Step]]]


def _shopping(c: _Ctx, k: int) -> tuple[str, list[Step]]:
    name, he, _his = c.person()
    g1 = c.pick(_GOODS)
    a, p = c.n(2, 12), c.n(2, 15)
    cost = a * p
    if k == 1:
        q = f"{name} buys {a} {g1} at ${p} each. How much does {name} spend?"
        return q, [Step(a, "*", p, f"{name} spends {{eq}} dollars on {g1}.")]
    if k == 2:
        bill = c.rng.choice([b for b in (20, 50, 100, 200) if b > cost] or [cost + 10])
        q = f"{name} buys {a} {g1} at ${p} each and pays with a ${bill} bill. How much change does {he} get?"
        return q, [
            Step(a, "*", p, f"The {g1} cost {{eq}} dollars."),
            Step(bill, "-", cost, f"{_cap(he)} gets {{eq}} dollars in change."),
        ]
    g2 = c.pick([g for g in _GOODS if g != g1])
    b, r = c.n(2, 12), c.n(2, 15)
    q = f"{name} buys {a} {g1} at ${p} each and {b} {g2} at ${r} each. How much does {he} spend in total?"
    return q, [
        Step(a, "*", p, f"The {g1} cost {{eq}} dollars."),
        Step(b, "*", r, f"The {g2} cost {{eq}} dollars."),
        Step(cost, "+", b * r, f"In total {he} spends {{eq}} dollars."),
    ]


def _ages(c: _Ctx, k: int) -> tuple[str, list[Step]]:
    n1, _, _ = c.person()
    n2, _, _ = c.person([n1])
    n3, _, _ = c.person([n1, n2])
    a, d = c.n(3, 40), c.n(2, 25)
    older = c.rng.random() < 0.5 or a <= d
    b = a + d if older else a - d
    s1 = Step(a, "+" if older else "-", d, f"{n2} is {{eq}} years old.")
    rel = "older" if older else "younger"
    if k == 1:
        q = f"{n1} is {a} years old. {n2} is {d} years {rel} than {n1}. How old is {n2}?"
        return q, [s1]
    m = c.n(2, 4)
    word = {2: "twice", 3: "three times", 4: "four times"}[m]
    s2 = Step(b, "*", m, f"{n3} is {{eq}} years old.")
    if k == 2:
        q = f"{n1} is {a} years old. {n2} is {d} years {rel} than {n1}. {n3} is {word} as old as {n2}. How old is {n3}?"
        return q, [s1, s2]
    y = c.n(2, 20)
    q = (
        f"{n1} is {a} years old. {n2} is {d} years {rel} than {n1}. "
        f"{n3} is {word} as old as {n2}. How old will {n3} be in {y} years?"
    )
    return q, [s1, s2, Step(b * m, "+", y, f"In {y} years {n3} will be {{eq}} years old.")]


def _distances(c: _Ctx, k: int) -> tuple[str, list[Step]]:
    v = c.pick(_VEHICLES)
    s, h = c.n(3, 60), c.n(2, 9)
    d1 = s * h
    s1 = Step(s, "*", h, f"First the {v} covers {{eq}} miles.")
    if k == 1:
        q = f"A {v} travels at {s} miles per hour for {h} hours. How many miles does it travel?"
        return q, [Step(s, "*", h, f"The {v} travels {{eq}} miles.")]
    if k == 2:
        e = c.n(5, 90)
        q = (
            f"A {v} travels at {s} miles per hour for {h} hours and then {e} more miles. "
            "How many miles does it travel in all?"
        )
        return q, [s1, Step(d1, "+", e, "In all it travels {eq} miles.")]
    s2, h2 = c.n(3, 60), c.n(2, 9)
    q = (
        f"A {v} travels at {s} miles per hour for {h} hours, then at {s2} miles per hour "
        f"for {h2} hours. How many miles does it travel in all?"
    )
    return q, [
        s1,
        Step(s2, "*", h2, "Then it covers {eq} miles."),
        Step(d1, "+", s2 * h2, "In all it travels {eq} miles."),
    ]


def _sharing(c: _Ctx, k: int) -> tuple[str, list[Step]]:
    name, he, his = c.person()
    g = c.pick(_GOODS)
    f = c.n(2, 9)
    if k == 1:
        each = c.n(2, 15)
        total = each * f
        q = f"{name} has {total} {g} and shares them equally among {f} friends. How many {g} does each friend get?"
        return q, [Step(total, "/", f, f"Each friend gets {{eq}} {g}.")]
    box = c.pick(_CONTAINERS)
    if k == 2:
        each = c.n(2, 12)
        total = each * f
        per = c.rng.choice([d for d in range(2, 13) if total % d == 0] or [1])
        boxes = total // per
        q = (
            f"{name} has {boxes} {box} with {per} {g} in each. {_cap(he)} shares all the {g} "
            f"equally among {f} friends. How many {g} does each friend get?"
        )
        return q, [
            Step(boxes, "*", per, f"{_cap(he)} has {{eq}} {g}."),
            Step(total, "/", f, f"Each friend gets {{eq}} {g}."),
        ]
    each = c.n(2, 12)
    final = each * f
    gone = c.n(2, 20)
    extra = c.n(1, min(30, final - 1))
    start = final - extra + gone
    q = (
        f"{name} has {start} {g}. {_cap(he)} gives away {gone} of them and then buys {extra} more. "
        f"{_cap(he)} puts all of {his} {g} equally into {f} {box}. How many {g} are in each of the {box}?"
    )
    return q, [
        Step(start, "-", gone, f"After giving some away {he} has {{eq}} {g}."),
        Step(start - gone, "+", extra, f"After buying more {he} has {{eq}} {g}."),
        Step(final, "/", f, f"Each of the {box} holds {{eq}} {g}."),
    ]


def _baking(c: _Ctx, k: int) -> tuple[str, list[Step]]:
    name, he, his = c.person()
    item = c.pick(_BAKED)
    t, per = c.n(2, 9), c.n(3, 15)
    made = t * per
    if k == 1:
        q = f"{name} bakes {t} trays of {item} with {per} {item} on each tray. How many {item} does {he} bake?"
        return q, [Step(t, "*", per, f"{_cap(he)} bakes {{eq}} {item}.")]
    if k == 2:
        eaten = c.n(1, made - 1)
        s2 = Step(made, "-", eaten, f"{{eq}} {item} are left.")
        q = (
            f"{name} bakes {t} trays of {item} with {per} {item} on each tray. "
            f"{_cap(his)} family eats {eaten} of them. How many {item} are left?"
        )
        return q, [Step(t, "*", per, f"{_cap(he)} bakes {{eq}} {item}."), s2]
    d = c.n(2, min(9, made - 1))
    left = d * c.n(1, (made - 1) // d)
    eaten = made - left
    s2 = Step(made, "-", eaten, f"{{eq}} {item} are left.")
    q = (
        f"{name} bakes {t} trays of {item} with {per} {item} on each tray. {_cap(his)} family eats "
        f"{eaten} of them. {_cap(he)} packs the rest equally into {d} boxes. "
        f"How many {item} are in each box?"
    )
    return q, [
        Step(t, "*", per, f"{_cap(he)} bakes {{eq}} {item}."),
        s2,
        Step(left, "/", d, f"Each box holds {{eq}} {item}."),
    ]


def _savings(c: _Ctx, k: int) -> tuple[str, list[Step]]:
    name, he, his = c.person()
    w, s = c.n(2, 12), c.n(3, 25)
    saved = w * s
    if k == 1:
        q = f"{name} saves ${s} every week for {w} weeks. How much money does {he} save?"
        return q, [Step(s, "*", w, f"{_cap(he)} saves {{eq}} dollars.")]
    gift = c.n(5, 60)
    s2 = Step(saved, "+", gift, f"Now {he} has {{eq}} dollars.")
    if k == 2:
        q = (
            f"{name} saves ${s} every week for {w} weeks. Then {his} aunt gives {him(he)} ${gift}. "
            f"How much money does {he} have?"
        )
        return q, [Step(s, "*", w, f"{_cap(he)} saves {{eq}} dollars."), s2]
    total = saved + gift
    spend = c.n(1, total - 1)
    q = (
        f"{name} saves ${s} every week for {w} weeks. Then {his} aunt gives {him(he)} ${gift}. "
        f"{_cap(he)} spends ${spend} on a bike. How much money does {he} have left?"
    )
    return q, [
        Step(s, "*", w, f"{_cap(he)} saves {{eq}} dollars."),
        s2,
        Step(total, "-", spend, f"{_cap(he)} has {{eq}} dollars left."),
    ]


def him(he: str) -> str:
    return "him" if he == "he" else "her"


TEMPLATES: dict[str, _Template] = {
    "shopping": _shopping,
    "ages": _ages,
    "distances": _distances,
    "sharing": _sharing,
    "baking": _baking,
    "savings": _savings,
}


def generate_problem(
    rng: random.Random, *, steps: int | None = None, template: str | None = None, number_scale: float = 1.0
) -> ToyProblem:
    """One problem from ``rng``; ``steps`` (1–3) and ``template`` are drawn when not given.
    ``number_scale`` (0, 1] shrinks every number range of the templates (smaller numbers)."""
    if not 0.0 < number_scale <= 1.0:
        raise ValueError(f"number_scale must be in (0, 1], got {number_scale}")
    k = steps if steps is not None else rng.randint(1, 3)
    if k not in (1, 2, 3):
        raise ValueError(f"steps must be 1, 2 or 3, got {k}")
    name = template if template is not None else rng.choice(sorted(TEMPLATES))
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; known: {sorted(TEMPLATES)}")
    question, step_list = TEMPLATES[name](_Ctx(rng, number_scale), k)
    problem = ToyProblem(question=question, steps=tuple(step_list), template=name)
    for s in problem.steps:  # validates exact division and non-negative results
        if s.result < 0:
            raise AssertionError(f"template {name} produced a negative result: {s}")
    return problem


def generate_problems(n: int, seed: int, *, number_scale: float = 1.0) -> list[ToyProblem]:
    """``n`` problems with pairwise different questions, deterministic in ``seed``."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[ToyProblem] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise RuntimeError(f"could not generate {n} distinct problems (got {len(out)})")
        p = generate_problem(rng, number_scale=number_scale)
        if p.question in seen:
            continue
        seen.add(p.question)
        out.append(p)
    return out


@dataclass(frozen=True, slots=True)
class ToySplits:
    """Disjoint splits. ``pretrain`` is the toy base model's own corpus (never used by the trainer
    stages); ``train`` is what the trainer takes as its GSM8K train file (it cuts its own 80/20
    train/dev split from it); ``dev`` and ``test`` are held out from everything."""

    pretrain: list[ToyProblem] = field(default_factory=list)
    train: list[ToyProblem] = field(default_factory=list)
    dev: list[ToyProblem] = field(default_factory=list)
    test: list[ToyProblem] = field(default_factory=list)

    def items(self) -> Iterable[tuple[str, list[ToyProblem]]]:
        return (("pretrain", self.pretrain), ("train", self.train), ("dev", self.dev), ("test", self.test))


def assign_styles(problems: Sequence[ToyProblem], one_line_share: float, seed: int) -> list[ToyProblem]:
    """Each problem written ``"one_line"`` with probability ``one_line_share`` (else ``"steps"``),
    drawn from its own seeded stream (so the questions do not depend on the share)."""
    if not 0.0 <= one_line_share <= 1.0:
        raise ValueError(f"one_line_share must be in [0, 1], got {one_line_share}")
    rng = random.Random(seed * 1_000_003 + 7919)
    return [dataclasses.replace(p, style="one_line" if rng.random() < one_line_share else "steps") for p in problems]


def make_splits(
    seed: int,
    *,
    n_train: int = 4000,
    n_dev: int = 300,
    n_test: int = 300,
    n_pretrain: int = 0,
    one_line_share: float = 0.0,
    pretrain_one_line_share: float | None = None,
    number_scale: float = 1.0,
) -> ToySplits:
    """Disjoint splits: distinct questions are generated once, then cut in the order
    train, dev, test, pretrain (so adding pretraining problems leaves the other splits unchanged).
    ``one_line_share`` of the train/dev/test solutions and ``pretrain_one_line_share`` (default:
    the same) of the pretrain solutions are written in the ``"one_line"`` style; the questions do
    not depend on either share."""
    if pretrain_one_line_share is None:
        pretrain_one_line_share = one_line_share
    problems = generate_problems(n_train + n_dev + n_test + n_pretrain, seed, number_scale=number_scale)
    a, b, c = n_train, n_train + n_dev, n_train + n_dev + n_test
    labelled = assign_styles(problems[:c], one_line_share, seed)
    pretrain = assign_styles(problems[c:], pretrain_one_line_share, seed + 1)
    return ToySplits(pretrain=pretrain, train=labelled[:a], dev=labelled[a:b], test=labelled[b:c])


def write_jsonl(problems: Iterable[ToyProblem], path: str | Path, *, annotate: bool = True) -> Path:
    """GSM8K-format JSONL: one ``{"question", "answer"}`` object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps(p.to_json(annotate=annotate), ensure_ascii=False) + "\n")
    return path


def write_splits(
    out_dir: str | Path,
    seed: int,
    *,
    n_train: int = 4000,
    n_dev: int = 300,
    n_test: int = 300,
    n_pretrain: int = 0,
    annotate: bool = True,
    one_line_share: float = 0.0,
    pretrain_one_line_share: float | None = None,
    number_scale: float = 1.0,
) -> dict[str, Path]:
    """Write ``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` (and ``pretrain.jsonl`` when
    ``n_pretrain`` > 0) under ``out_dir``; return their paths."""
    if pretrain_one_line_share is None:
        pretrain_one_line_share = one_line_share
    splits = make_splits(
        seed,
        n_train=n_train,
        n_dev=n_dev,
        n_test=n_test,
        n_pretrain=n_pretrain,
        one_line_share=one_line_share,
        pretrain_one_line_share=pretrain_one_line_share,
        number_scale=number_scale,
    )
    out = Path(out_dir)
    paths = {name: write_jsonl(ps, out / f"{name}.jsonl", annotate=annotate) for name, ps in splits.items() if ps}
    meta = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "n_train": n_train,
        "n_dev": n_dev,
        "n_test": n_test,
        "n_pretrain": n_pretrain,
        "annotate": annotate,
        "one_line_share": one_line_share,
        "pretrain_one_line_share": pretrain_one_line_share,
        "number_scale": number_scale,
    }
    (out / "TOY_PROBLEMS.json").write_text(json.dumps(meta, indent=2) + "\n")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m trainer.toy.problems", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-dev", type=int, default=300)
    ap.add_argument("--n-test", type=int, default=300)
    ap.add_argument(
        "--n-pretrain",
        type=int,
        default=0,
        help="also write pretrain.jsonl (the toy base model's corpus, disjoint from the rest)",
    )
    ap.add_argument(
        "--one-line-share",
        type=float,
        default=0.0,
        help="share of solutions written as one folded expression instead of one line per step",
    )
    ap.add_argument(
        "--pretrain-one-line-share",
        type=float,
        default=None,
        help="the same for pretrain.jsonl (default: --one-line-share)",
    )
    ap.add_argument(
        "--number-scale",
        type=float,
        default=1.0,
        help="shrink every number range of the templates by this factor (0, 1]",
    )
    ap.add_argument("--no-annotations", action="store_true", help="omit the <<a*b=c>> calculator annotations")
    args = ap.parse_args(argv)
    paths = write_splits(
        args.out,
        args.seed,
        n_train=args.n_train,
        n_dev=args.n_dev,
        n_test=args.n_test,
        n_pretrain=args.n_pretrain,
        annotate=not args.no_annotations,
        one_line_share=args.one_line_share,
        pretrain_one_line_share=args.pretrain_one_line_share,
        number_scale=args.number_scale,
    )
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
