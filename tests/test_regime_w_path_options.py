"""Regime W's optional s_path / support options (DESIGN §3, "Options measured for issue 12").

``[path] reference`` (which arms s_path compares with), ``[path] question_numbers`` (μ, the share of
s_path given to the question's numbers a trajectory uses) and ``[coherence] gold_only_support``
(with gold, a wrong answer's agreement with the arms earns nothing). Absent, the scorer is 1.0.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from reward_service.regime_w.config import ArmSpec, ConfigError, RegimeWConfig, default_config, load_config
from reward_service.regime_w.scorer import ArmText, coverage, prepare_arms, s_path, score_trajectories

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ROOT / "reward_service" / "regime_w" / "toy_variants"

QUESTION = (
    "Carla is 18 years old. Mia is 7 years older than Carla. Anna is three times as old as Mia. "
    "How old will Anna be in 3 years?"
)
GOOD = (
    "Mia is 18+7 = <<18+7=25>>25 years old.\nAnna is 25*3 = <<25*3=75>>75 years old.\n"
    "In 3 years Anna will be 75+3 = <<75+3=78>>78 years old.\n#### 78"
)
# right first two steps, a slip in the last: wrong answer
NEAR = (
    "Mia is 18+7 = <<18+7=25>>25 years old.\nAnna is 25*3 = <<25*3=75>>75 years old.\n"
    "In 3 years Anna will be 75+3 = <<75+3=79>>79 years old.\n#### 79"
)
# wrong from the first step, but the answer most arms give
POPULAR = (
    "Mia is 18-7 = <<18-7=11>>11 years old.\nAnna is 11*3 = <<11*3=33>>33 years old.\n"
    "In 3 years Anna will be 33+3 = <<33+3=36>>36 years old.\n#### 36"
)
FOLDED = "In 3 years Anna will be (18+7)*3+3 = <<(18+7)*3+3=78>>78 years old.\n#### 78"
ARM_TEXTS = [GOOD, GOOD, GOOD, POPULAR, POPULAR, POPULAR, POPULAR, NEAR]


def with_options(**changes: object) -> RegimeWConfig:
    return dataclasses.replace(default_config(), fingerprint="sha256:test-options", **changes)


def scores(config: RegimeWConfig, gold: str | None) -> dict[str, float]:
    arms = prepare_arms(QUESTION, [ArmText(n, t) for n, t in zip(config.arm_names, ARM_TEXTS)], config)
    texts = {"good": GOOD, "near": NEAR, "popular": POPULAR, "folded": FOLDED}
    out = score_trajectories(list(texts.values()), [30] * len(texts), arms, config, gold)
    return {name: s.reward for name, s in zip(texts, out)}


def test_scorer_1_0_rewards_the_popular_wrong_path_over_the_nearly_right_one() -> None:
    r = scores(with_options(), "78")
    assert r["good"] > r["folded"] > r["popular"] > r["near"], r


def test_gold_path_and_gold_only_support_rank_the_nearly_right_wrong_path_first() -> None:
    r = scores(with_options(path_reference="gold", gold_only_support=True), "78")
    assert r["good"] > r["folded"] > r["near"] > r["popular"], r


def test_gold_path_compares_with_the_arms_that_reached_the_gold_only() -> None:
    config = with_options(path_reference="gold")
    arms = prepare_arms(QUESTION, [ArmText(n, t) for n, t in zip(config.arm_names, ARM_TEXTS)], config)
    good_d = frozenset({"25", "75", "78"})
    assert s_path(good_d, 1.0, arms, reference="78") == pytest.approx(1.0)  # all 3 gold arms: D = {25, 75, 78}
    # every arm (scorer 1.0): 3 arms F1 1, 4 arms F1 0, 1 arm F1 2/3
    assert s_path(good_d, 1.0, arms) == pytest.approx((3 * 1.0 + 2 / 3) / 8)
    # no arm gives the reference answer: every arm again
    assert s_path(good_d, 1.0, arms, reference="1000") == pytest.approx(s_path(good_d, 1.0, arms))
    # validity still multiplies
    assert s_path(good_d, 0.5, arms, reference="78") == pytest.approx(0.5)


def test_label_free_gold_reference_is_scorer_1_0_and_supporting_uses_the_consensus() -> None:
    assert scores(with_options(path_reference="gold", gold_only_support=True), None) == pytest.approx(
        scores(with_options(), None)
    )
    config = with_options(path_reference="supporting")
    arms = prepare_arms(QUESTION, [ArmText(n, t) for n, t in zip(config.arm_names, ARM_TEXTS)], config)
    assert arms.consensus_answer == "36"
    [popular] = score_trajectories([POPULAR], [30], arms, config, None)
    assert popular.s_path == pytest.approx(1.0)  # the 4 consensus arms computed exactly its path


def test_question_number_coverage() -> None:
    assert coverage(frozenset({"18", "7"}), frozenset({"18", "7", "3"})) == pytest.approx(2 / 3)
    assert coverage(frozenset(), frozenset()) == 1.0
    config = with_options(path_question_numbers=0.3)
    arms = prepare_arms(QUESTION, [ArmText(n, t) for n, t in zip(config.arm_names, ARM_TEXTS)], config)
    agreement = s_path(frozenset({"25", "75", "78"}), 1.0, arms)
    assert s_path(frozenset({"25", "75", "78"}), 1.0, arms, coverage=1.0, mu=0.3) == pytest.approx(
        0.7 * agreement + 0.3
    )
    # a solution that skips a number of the question loses the coverage share
    skip = "Anna is 25*3 = <<25*3=75>>75 years old.\n#### 75"
    [full, part] = score_trajectories([GOOD, skip], [30, 30], arms, config, None)
    assert full.s_path > part.s_path


def write_variant(tmp_path: Path, extra: str, coherence_extra: str = "") -> Path:
    text = (ROOT / "reward_service" / "regime_w" / "default_config.toml").read_text(encoding="utf-8")
    text = text.replace("lambda_cf = 0.25\n", "lambda_cf = 0.25\n" + coherence_extra, 1) + extra
    path = tmp_path / "variant.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_options_load_strictly_and_move_the_fingerprint(tmp_path: Path) -> None:
    cfg = load_config(
        write_variant(tmp_path, '\n[path]\nreference = "gold"\nquestion_numbers = 0.3\n', "gold_only_support = true\n")
    )
    assert (cfg.path_reference, cfg.path_question_numbers, cfg.gold_only_support) == ("gold", 0.3, True)
    assert cfg.fingerprint != default_config().fingerprint
    d = default_config()
    assert (d.path_reference, d.path_question_numbers, d.gold_only_support) == ("all", 0.0, False)
    for extra, coherence, message in [
        ('\n[path]\nreference = "best"\n', "", "reference"),
        ("\n[path]\nquestion_numbers = 1.5\n", "", "question_numbers"),
        ("\n[path]\nmu = 0.3\n", "", "unknown key"),
        ("", 'gold_only_support = "yes"\n', "gold_only_support"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(write_variant(tmp_path, extra, coherence))


@pytest.mark.parametrize("path", sorted(VARIANTS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_toy_variant_loads_and_keeps_the_toy_arms(path: Path) -> None:
    toy = load_config(ROOT / "reward_service" / "regime_w" / "toy_config.toml")
    cfg = load_config(path)
    assert cfg.arms == toy.arms and cfg.fingerprint != toy.fingerprint


def test_make_config_helper_arms_are_untouched_by_options() -> None:
    spec = ArmSpec("a", "compute", "s", None, "{question}", 0.0, 1.0, 8, 1.0)
    cfg = dataclasses.replace(with_options(path_reference="gold"), arms=(spec,), families=("compute",))
    arms = prepare_arms("q 1 2", [ArmText("a", "1 + 2 = 3\n#### 3")], cfg)
    [s] = score_trajectories(["1 + 2 = 3\n#### 3"], [5], arms, cfg, "3")
    assert s.correctness == 1.0 and s.s_path == pytest.approx(1.0)
