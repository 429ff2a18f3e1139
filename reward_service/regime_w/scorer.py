"""The Regime W formulas of DESIGN §3, as pure functions named like the equations.

Per question the arm texts are parsed once into ``PreparedArms`` (answer and ``D(A_k)`` of each
arm sample, family totals, the consensus answer); each trajectory is then scored with

    s_end  = Σ_{k∈supp(ans t)} w_k / Σ_k w_k
    s_path = v(t) · [(1−μ)·Σ_{k∈R} w_k F1(D(t), D(A_k)) / Σ_{k∈R} w_k + μ·cov(t)]
    s_cf   = min_F Σ_{k∈F∩supp} w_k / Σ_{k∈F} w_k        (families with an arm present)
    (with gold and ``gold_only_support``, s_end and s_cf take supp = ∅ for a wrong answer: scorer 2.0)
    s_wm   = (λ_end s_end + λ_path s_path + λ_cf s_cf) / (λ_end + λ_path + λ_cf)
    reward = α·correctness + β·s_wm − γ·length_penalty,  length_penalty = num_tokens / length_scale

``R`` is every arm (``[path] reference = "all"``, scorer 1.0), or the arms whose answer is the gold
(``"gold"``; every arm when label-free), or the gold else the consensus answer (``"supporting"``) —
every arm again when no arm gives that answer; ``cov(t)`` is the share of the question's numbers that ``t`` writes, weighted by ``μ``
(``[path] question_numbers``, 0 in scorer 1.0).

An arm with ``m`` supplied texts gives each text the weight ``w_k / m``; arms without a text are
absent from every sum. ``F1(A, B) = 2|A∩B| / (|A|+|B|)``, and 0 when either set is empty.
Sums run in a canonical order (config arm order, then text), so the scores do not depend on the
order in which the arm texts were supplied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reward_service.regime_w.config import RegimeWConfig
from reward_service.regime_w.derived import derived_from_scan, numbers_in, scan_equations
from shared_schemas.answer import answers_equal, gold_answer, is_answer_form, parse_answer

__all__ = [
    "UnknownArmError",
    "GoldAnswerError",
    "ArmText",
    "ArmSample",
    "PreparedArms",
    "prepare_arms",
    "arm_answer",
    "f1",
    "s_end",
    "s_path",
    "coverage",
    "s_cf",
    "s_wm",
    "reward",
    "TrajectoryScores",
    "score_trajectory",
    "score_trajectories",
]

_TIE_DIGITS = 12  # weights that agree to 12 decimals are a tie for the consensus answer


class UnknownArmError(ValueError):
    """Arm texts name arms that the config does not have; the message names them."""


class GoldAnswerError(ValueError):
    """The gold answer holds no answer (no number, no ``#### X``)."""


@dataclass(frozen=True, slots=True)
class ArmText:
    """One arm output: the arm's name and the text the arm model wrote."""

    arm: str
    text: str


@dataclass(frozen=True, slots=True)
class ArmSample:
    """One arm text, parsed: its answer ``ans(A_k)`` and derived quantities ``D(A_k)``."""

    arm: str
    arm_index: int
    family: str
    weight: float  # w_k / m
    answer: str | None
    derived: frozenset[str]


class PreparedArms:
    """The arms of one question, parsed once; scoring many trajectories then reuses them."""

    __slots__ = (
        "_path_by_answer",
        "_path_terms",
        "_support",
        "config_fingerprint",
        "consensus_answer",
        "family_totals",
        "question",
        "question_numbers",
        "samples",
        "total_weight",
    )

    def __init__(self, question: str, samples: tuple[ArmSample, ...], config: RegimeWConfig) -> None:
        self.question = question
        self.question_numbers = numbers_in(question)
        self.samples = samples
        self.config_fingerprint = config.fingerprint
        self.total_weight = sum(s.weight for s in samples)
        totals = dict.fromkeys(config.families, 0.0)
        for s in samples:
            totals[s.family] += s.weight
        # families with no arm present are left out of s_cf's min
        self.family_totals: tuple[tuple[str, float], ...] = tuple((f, w) for f, w in totals.items() if w > 0)
        # (weight, D(A_k), |D(A_k)|) of arm samples with a non-empty D: the F1 terms of s_path
        self._path_terms = tuple((s.weight, s.derived, len(s.derived)) for s in samples if s.derived)
        self._path_by_answer: dict[str, tuple[tuple[tuple[float, frozenset[str], int], ...], float]] = {}
        self._support: dict[str, tuple[float, tuple[float, ...]]] = {}
        self.consensus_answer = _consensus(samples, config)

    def path_terms(self, reference: str | None) -> tuple[tuple[tuple[float, frozenset[str], int], ...], float]:
        """The F1 terms of ``s_path`` and their weight total: the arms whose answer is ``reference``
        (memoized per answer), or every arm when ``reference`` is None or no arm gives it."""
        if reference is None:
            return self._path_terms, self.total_weight
        hit = self._path_by_answer.get(reference)
        if hit is None:
            supp, _ = self.support(reference)
            if supp <= 0.0:
                hit = (self._path_terms, self.total_weight)
            else:
                terms = tuple(
                    (s.weight, s.derived, len(s.derived))
                    for s in self.samples
                    if s.derived
                    and s.answer is not None
                    and (s.answer == reference or answers_equal(reference, s.answer))
                )
                hit = (terms, supp)
            self._path_by_answer[reference] = hit
        return hit

    def support(self, answer: str) -> tuple[float, tuple[float, ...]]:
        """``Σ_{k∈supp(a)} w_k`` and the same sum per present family (memoized per answer)."""
        hit = self._support.get(answer)
        if hit is not None:
            return hit
        total = 0.0
        per_family = dict.fromkeys((f for f, _ in self.family_totals), 0.0)
        for s in self.samples:
            if s.answer is not None and (s.answer == answer or answers_equal(answer, s.answer)):
                total += s.weight
                per_family[s.family] += s.weight
        result = (total, tuple(per_family.values()))
        self._support[answer] = result
        return result

    def __repr__(self) -> str:
        return (
            f"PreparedArms(samples={len(self.samples)}, total_weight={self.total_weight:g}, "
            f"consensus_answer={self.consensus_answer!r})"
        )


def _consensus(samples: tuple[ArmSample, ...], config: RegimeWConfig) -> str | None:
    """The answer with the largest arm weight; ties: more compute-family weight, then arm order.

    The tie-break family is the first of ``config.families`` ("compute" in the default config).
    Only answers in answer form (``shared_schemas.answer.is_answer_form``: a number or a short word
    answer) vote: the consensus is returned to the client and must never carry an arm's free text
    (an arm model that boxes its own system prompt).
    """
    first_family = config.families[0]
    groups: list[list[Any]] = []  # [representative answer, total weight, first-family weight, first arm index]
    for s in samples:  # canonical order: config arm order
        if s.answer is None or not is_answer_form(s.answer):
            continue
        for g in groups:
            if s.answer == g[0] or answers_equal(s.answer, g[0]):
                break
        else:
            g = [s.answer, 0.0, 0.0, s.arm_index]
            groups.append(g)
        g[1] += s.weight
        if s.family == first_family:
            g[2] += s.weight
    if not groups:
        return None
    best = max(groups, key=lambda g: (round(g[1], _TIE_DIGITS), round(g[2], _TIE_DIGITS), -g[3]))
    return str(best[0])


def arm_answer(text: str) -> str | None:
    """``ans(A_k)``: the arm text's answer when it is in answer form, else None (free text is no answer:
    it neither votes nor supports a trajectory's answer, so no arm text can be confirmed by guessing)."""
    value = parse_answer(text).value
    return value if is_answer_form(value) else None


def prepare_arms(question: str, arm_texts: Sequence[ArmText], config: RegimeWConfig) -> PreparedArms:
    """Parse every arm text of ``question`` once (answer, ``D``); raises ``UnknownArmError``."""
    index = {spec.name: i for i, spec in enumerate(config.arms)}
    unknown = sorted({a.arm for a in arm_texts if a.arm not in index})
    if unknown:
        raise UnknownArmError(
            f"unknown arm name(s) {', '.join(repr(u) for u in unknown)}; known arms: {', '.join(config.arm_names)}"
        )
    counts: dict[str, int] = {}
    for a in arm_texts:
        counts[a.arm] = counts.get(a.arm, 0) + 1
    qn = numbers_in(question)
    ordered = sorted(arm_texts, key=lambda a: (index[a.arm], a.text))
    samples = []
    for a in ordered:
        spec = config.arms[index[a.arm]]
        scan = scan_equations(a.text, config.equation_rel_tol)
        samples.append(
            ArmSample(
                arm=a.arm,
                arm_index=index[a.arm],
                family=spec.family,
                weight=spec.weight / counts[a.arm],
                answer=arm_answer(a.text),
                derived=derived_from_scan(scan, a.text, qn),
            )
        )
    return PreparedArms(question, tuple(samples), config)


# --- the equations of DESIGN §3 ----------------------------------------------------------------


def f1(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    """``F1(A, B) = 2|A∩B| / (|A|+|B|)``; 0 when either set is empty."""
    if not a or not b:
        return 0.0
    return 2.0 * len(a & b) / (len(a) + len(b))


def s_end(answer: str | None, arms: PreparedArms) -> float:
    """End-answer agreement: the arm weight that supports ``answer``, over all arm weight."""
    if answer is None or arms.total_weight <= 0.0:
        return 0.0
    supp, _ = arms.support(answer)
    return min(1.0, supp / arms.total_weight)


def s_path(
    derived: frozenset[str] | set[str],
    validity: float,
    arms: PreparedArms,
    *,
    reference: str | None = None,
    coverage: float = 0.0,
    mu: float = 0.0,
) -> float:
    """Path agreement: ``v(t) · [(1−μ)·Σ_{k∈R} w_k F1(D(t), D(A_k)) / Σ_{k∈R} w_k + μ·coverage]``.

    ``R``: the arms whose answer is ``reference`` (every arm when it is None or no arm gives it).
    """
    if validity <= 0.0:
        return 0.0
    terms, total = arms.path_terms(reference)
    agreement = 0.0
    if derived and total > 0.0:
        n = len(derived)
        acc = 0.0
        for w, d, m in terms:
            common = len(derived & d)
            if common:
                acc += w * (2.0 * common / (n + m))
        agreement = acc / total
    return min(1.0, validity * ((1.0 - mu) * agreement + mu * coverage))


def coverage(text_numbers: frozenset[str], question_numbers: frozenset[str]) -> float:
    """``cov(t)``: the share of the question's numbers that the trajectory writes (1 when it has none)."""
    if not question_numbers:
        return 1.0
    return len(question_numbers & text_numbers) / len(question_numbers)


def s_cf(answer: str | None, arms: PreparedArms) -> float:
    """Counterfactual family robustness: the smallest per-family share of support for ``answer``."""
    if answer is None or not arms.family_totals:
        return 0.0
    _, per_family = arms.support(answer)
    return min(1.0, min(supp / total for supp, (_, total) in zip(per_family, arms.family_totals)))


def s_wm(s_end: float, s_path: float, s_cf: float, config: RegimeWConfig) -> float:
    """``(λ_end s_end + λ_path s_path + λ_cf s_cf) / (λ_end + λ_path + λ_cf)``."""
    num = config.lambda_end * s_end + config.lambda_path * s_path + config.lambda_cf * s_cf
    return num / (config.lambda_end + config.lambda_path + config.lambda_cf)


def reward(correctness: float | None, s_wm: float, length_penalty: float, config: RegimeWConfig) -> float:
    """``α·correctness + β·s_wm − γ·length_penalty``; the correctness term is left out when None."""
    value = config.beta * s_wm - config.gamma * length_penalty
    if correctness is not None:
        value += config.alpha * correctness
    return value


# --- scoring -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrajectoryScores:
    reward: float
    correctness: float | None
    s_end: float
    s_path: float
    s_cf: float
    s_wm: float
    length_penalty: float
    num_tokens: int
    final_answer: str | None
    format_ok: bool


def _gold(gold: str | None) -> str | None:
    if gold is None:
        return None
    value = gold_answer(gold)
    if value is None:
        raise GoldAnswerError(f"gold answer {gold[:80]!r} holds no answer (expected '#### 72' or '72')")
    return value


def _check(arms: PreparedArms, config: RegimeWConfig) -> None:
    if arms.config_fingerprint != config.fingerprint:
        raise ValueError(
            f"arms were prepared with config {arms.config_fingerprint} but scored with {config.fingerprint}"
        )


def correct_answer(answer: str | None, gold: str, memo: dict[str | None, float]) -> float:
    """``1[ans(t) ≡ gold]``, memoized per answer within one call (many trajectories share an answer)."""
    value = memo.get(answer)
    if value is None:
        value = memo[answer] = 1.0 if answers_equal(answer, gold) else 0.0
    return value


def _score(
    text: str,
    num_tokens: int,
    arms: PreparedArms,
    config: RegimeWConfig,
    gold: str | None,
    correct: dict[str | None, float],
) -> TrajectoryScores:
    if num_tokens < 0:
        raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
    parsed = parse_answer(text)
    answer = parsed.value
    scan = scan_equations(text, config.equation_rel_tol)
    derived = derived_from_scan(scan, text, arms.question_numbers)
    # with gold and gold_only_support, a wrong answer's agreement with the arms earns nothing
    supported = answer
    if gold is not None and config.gold_only_support and correct_answer(answer, gold, correct) == 0.0:
        supported = None
    end = s_end(supported, arms)
    reference = None
    if config.path_reference == "gold":
        reference = gold
    elif config.path_reference == "supporting":
        reference = gold if gold is not None else arms.consensus_answer
    mu = config.path_question_numbers
    cov = coverage(numbers_in.fn(text), arms.question_numbers) if mu > 0.0 else 0.0
    path = s_path(derived, scan.validity, arms, reference=reference, coverage=cov, mu=mu)
    cf = s_cf(supported, arms)
    wm = s_wm(end, path, cf, config)
    correctness = None if gold is None else correct_answer(answer, gold, correct)
    lp = num_tokens / config.length_scale
    return TrajectoryScores(
        reward=reward(correctness, wm, lp, config),
        correctness=correctness,
        s_end=end,
        s_path=path,
        s_cf=cf,
        s_wm=wm,
        length_penalty=lp,
        num_tokens=num_tokens,
        final_answer=answer,
        format_ok=parsed.format_ok,
    )


def score_trajectory(
    text: str, num_tokens: int, arms: PreparedArms, config: RegimeWConfig, gold: str | None
) -> TrajectoryScores:
    """Every score of one trajectory; ``gold`` is ``"#### 72"``, ``"72"`` or None (label-free)."""
    _check(arms, config)
    return _score(text, num_tokens, arms, config, _gold(gold), {})


def score_trajectories(
    texts: Sequence[str],
    num_tokens: Sequence[int],
    arms: PreparedArms,
    config: RegimeWConfig,
    gold: str | None,
) -> list[TrajectoryScores]:
    """``score_trajectory`` for each text of one question (the gold answer is parsed once)."""
    if len(texts) != len(num_tokens):
        raise ValueError(f"{len(texts)} trajectories but {len(num_tokens)} token counts")
    _check(arms, config)
    g = _gold(gold)
    correct: dict[str | None, float] = {}
    return [_score(t, n, arms, config, g, correct) for t, n in zip(texts, num_tokens)]
