"""The toy base model: trains from scratch (tiny test config), loads with from_pretrained, caches."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from shared_schemas.answer import extract_answer
from trainer.toy.base import (
    MARKER_FILE,
    ToyBaseArguments,
    ToyBaseTimeLimit,
    build_toy_base,
    cache_key,
    load_cached,
    noisy_solution,
    other_format_solution,
)
from trainer.toy.problems import generate_problems, make_splits


def _fast_args(tmp_path, **overrides) -> ToyBaseArguments:
    """A configuration that trains in seconds: it checks the machinery, not the accuracy."""
    settings = dict(
        toy_data_dir=str(tmp_path / "data"),
        toy_base_dir=str(tmp_path / "base"),
        n_train=40,
        n_dev=8,
        n_test=8,
        n_pretrain=160,
        vocab_size=400,
        hidden_size=32,
        num_layers=1,
        num_heads=2,
        intermediate_size=64,
        base_max_steps=6,
        base_batch_size=8,
        base_warmup_steps=2,
        eval_samples=4,
        eval_max_new_tokens=12,
        eval_batch_size=4,
    )
    settings.update(overrides)
    return ToyBaseArguments(**settings)


@pytest.fixture(scope="module")
def fast_base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toy-base")
    args = _fast_args(tmp)
    return args, build_toy_base(args)


def test_fast_build_writes_data_model_and_marker(fast_base) -> None:
    args, result = fast_base
    assert not result.cached
    for name in ("train", "dev", "test", "pretrain"):
        assert (result.data_dir / f"{name}.jsonl").is_file()
    meta = json.loads((result.model_dir / MARKER_FILE).read_text())
    assert meta["cache_key"] == cache_key(args)
    assert meta["train_steps"] == 6 and meta["dev_samples"] == 4
    assert 0.0 <= meta["dev_accuracy"] <= 1.0
    assert meta["num_parameters"] < 5_000_000


def test_base_loads_with_from_pretrained_and_generates(fast_base) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

    from trainer.prompts import build_prompt

    _, result = fast_base
    tok = AutoTokenizer.from_pretrained(result.model_dir)
    model = AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.pad_token == "<pad>" and tok.eos_token == "</s>"
    assert tok.pad_token_id != tok.eos_token_id
    assert model.config.eos_token_id == tok.eos_token_id
    # Digits are single tokens, so arithmetic is learnable.
    pieces = tok.convert_ids_to_tokens(tok("He pays 12345 dollars.", add_special_tokens=False)["input_ids"])
    for digit in "12345":
        assert digit in pieces
    assert not any(any(c.isdigit() for c in p) and len(p.strip("Ġ")) > 1 for p in pieces)
    # THE trainer prompt goes through the chat template; no BOS is added twice.
    prompt = build_prompt("Anna buys 3 apples at $2 each. How much does Anna spend?", tok)
    assert prompt.startswith("<|user|>") and prompt.endswith("<|assistant|>")
    ids = tok(prompt, return_tensors="pt")
    assert tok.decode(ids["input_ids"][0]) == prompt
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_second_call_returns_from_cache_without_retraining(fast_base) -> None:
    args, result = fast_base
    weights = sorted(result.model_dir.glob("*.safetensors"))
    assert weights
    stamp = {w: w.stat().st_mtime_ns for w in weights}
    again = build_toy_base(args)
    assert again.cached
    assert again.meta == result.meta
    assert {w: w.stat().st_mtime_ns for w in weights} == stamp
    # Settings that change the weights change the key; output locations and eval size do not.
    assert cache_key(dataclasses.replace(args, base_seed=1)) != cache_key(args)
    assert cache_key(dataclasses.replace(args, eval_samples=99, toy_base_dir="elsewhere")) == cache_key(args)
    assert load_cached(dataclasses.replace(args, base_max_steps=7)) is None
    # The style share of the corpus changes the weights; that of the trainer's files does not.
    assert cache_key(dataclasses.replace(args, corpus_one_line_share=0.5)) != cache_key(args)
    assert cache_key(dataclasses.replace(args, one_line_share=0.9)) == cache_key(args)


def test_a_base_cut_short_by_the_time_limit_is_not_reused(fast_base, tmp_path) -> None:
    """A marker of an older build that stopped on the clock (fewer steps than asked) is not the base."""
    args, result = fast_base
    short = tmp_path / "base"
    short.mkdir()
    for meta in (
        {**result.meta, "stopped_by_time_limit": True},
        {**result.meta, "train_steps": args.base_max_steps - 1},
    ):
        (short / MARKER_FILE).write_text(json.dumps(meta))
        assert load_cached(dataclasses.replace(args, toy_base_dir=str(short))) is None
    (short / MARKER_FILE).write_text(json.dumps(result.meta))
    assert load_cached(dataclasses.replace(args, toy_base_dir=str(short))) == result.meta


def test_the_time_limit_fails_the_build_instead_of_saving_a_shorter_base(tmp_path) -> None:
    """The steps define the base, never the clock: reaching ``base_max_seconds`` raises and saves nothing."""
    args = _fast_args(tmp_path, base_max_seconds=0.0)
    with pytest.raises(ToyBaseTimeLimit, match="base_max_seconds=0 reached after 0 of 6 steps"):
        build_toy_base(args)
    assert not (Path(args.toy_base_dir) / MARKER_FILE).exists()
    assert load_cached(args) is None


def test_a_new_style_share_rewrites_the_trainers_files_but_keeps_the_cached_base(fast_base) -> None:
    args, result = fast_base
    train = Path(args.toy_data_dir) / "train.jsonl"

    steps = [
        len(p.steps)
        for p in make_splits(args.problems_seed, n_train=args.n_train, n_dev=args.n_dev, n_test=args.n_test).train
    ]

    def folded_share() -> float:
        """Share of the multi-step problems of train.jsonl whose solution is one line + '#### N'."""
        rows = [json.loads(line) for line in train.read_text().splitlines()]
        multi = [r for r, k in zip(rows, steps, strict=True) if k > 1]
        return sum(r["answer"].count("\n") == 1 for r in multi) / len(multi)

    try:
        again = build_toy_base(dataclasses.replace(args, one_line_share=1.0))
        assert again.cached and again.meta == result.meta
        assert folded_share() == 1.0
        meta = json.loads((Path(args.toy_data_dir) / "TOY_PROBLEMS.json").read_text())
        assert meta["one_line_share"] == 1.0 and meta["pretrain_one_line_share"] == args.corpus_one_line_share
    finally:
        build_toy_base(args)
    assert folded_share() < 1.0


def test_toy_base_stage_contract(fast_base, tmp_path) -> None:
    from trainer.stages import toy_base

    args, result = fast_base
    planned = toy_base.plan(args)
    assert planned["cached"] is True and planned["cache_key"] == cache_key(args)
    summary = toy_base.run(args)
    assert summary["cached"] is True and summary["model_dir"] == str(result.model_dir)
    json.dumps(summary)  # JSON-able
    fresh = _fast_args(tmp_path)
    assert toy_base.plan(fresh)["cached"] is False


def test_imperfect_corpus_solutions() -> None:
    rng = random.Random(0)
    for p in generate_problems(300, seed=6):
        noisy = noisy_solution(p, rng)
        assert noisy.split("\n")[-1].startswith("#### ")
        assert noisy != p.solution(annotate=False)
        assert extract_answer(noisy) is not None
        other = other_format_solution(p, rng)
        assert extract_answer(other) == str(p.answer_value)


def test_invalid_settings_fail_clearly(tmp_path) -> None:
    with pytest.raises(ValueError, match="divisible by num_heads"):
        _fast_args(tmp_path, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="noise_wrong_step"):
        _fast_args(tmp_path, noise_wrong_step=1.5)
    with pytest.raises(ValueError, match="one_line_share"):
        _fast_args(tmp_path, one_line_share=-0.1)


@pytest.mark.slow
def test_full_toy_base_trains_to_a_weak_but_useful_base(tmp_path) -> None:
    """The default configuration: minutes on 2 CPU cores, 20–60% greedy dev accuracy."""
    args = ToyBaseArguments(
        toy_data_dir=str(tmp_path / "data"), toy_base_dir=str(tmp_path / "base"), base_num_threads=2
    )
    result = build_toy_base(args)
    assert result.meta["train_steps"] == args.base_max_steps
    assert 0.2 <= result.meta["dev_accuracy"] <= 0.6, result.meta


def test_toy_regime_w_config_matches_the_trainer_prompt_and_default_constants() -> None:
    from pathlib import Path

    from reward_service.regime_w.config import default_config, load_config
    from trainer.prompts import build_messages

    toy = load_config(Path(__file__).resolve().parents[1] / "reward_service/regime_w/toy_config.toml")
    default = default_config()
    assert toy.arm_names == default.arm_names
    for name in toy.arm_names:
        arm, ref = toy.arm(name), default.arm(name)
        assert arm.family == ref.family and arm.temperature == ref.temperature
        # The toy model knows one prompt: every arm renders exactly the trainer's prompt messages.
        assert arm.render_messages("Anna has 3 apples. How many?") == build_messages("Anna has 3 apples. How many?")
    for constant in (
        "lambda_end",
        "lambda_path",
        "lambda_cf",
        "alpha",
        "beta",
        "gamma",
        "length_scale",
        "equation_rel_tol",
    ):
        assert getattr(toy, constant) == getattr(default, constant), constant
    assert toy.fingerprint != default.fingerprint


@pytest.mark.parametrize("stage", ["sft", "rollouts", "prefs", "dpo", "grpo", "eval", "export"])
def test_toy_recipes_resolve_for_every_stage(stage, capsys) -> None:
    from pathlib import Path

    from trainer.cli import main

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "toy" / f"{stage}.yaml"
    assert main([stage, "--config", str(recipe), "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["stage"] == stage and plan["dry_run"] is True
    assert "toy" in json.dumps(plan)


def test_toy_base_recipe_parses_into_the_stage_arguments() -> None:
    from pathlib import Path

    from trl import TrlParser

    from trainer.stages import toy_base

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "toy_base.yaml"
    (args,) = TrlParser(toy_base.ARG_CLASSES).parse_args_and_config(args=["--config", str(recipe)])[:1]
    assert args == ToyBaseArguments(toy_data_dir=args.toy_data_dir, toy_base_dir=args.toy_base_dir)
    assert args.toy_data_dir == "data/toy" and args.toy_base_dir == "checkpoints/toy_base"


def _recipe_args() -> ToyBaseArguments:
    from trl import TrlParser

    from trainer.stages import toy_base

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "toy_base.yaml"
    (args,) = TrlParser(toy_base.ARG_CLASSES).parse_args_and_config(args=["--config", str(recipe)])[:1]
    return args


def test_the_shipped_base_is_the_recipes_base_on_the_pinned_kernels(monkeypatch) -> None:
    """assets/toy_base (scripts/toy_base_asset.py) is found by the stage's cache for the recipe's settings on the
    pinned kernels (the toy loop starts from it), and by no other: unpinned kernels are another base."""
    from experiments.toy_loop import SHIPPED_BASE
    from trainer.toy.base import load_cached
    from trainer.toy.determinism import PINNED_CPU_KERNELS

    args = dataclasses.replace(_recipe_args(), toy_base_dir=str(SHIPPED_BASE))
    for name, value in PINNED_CPU_KERNELS.items():
        monkeypatch.setenv(name, value)
    meta = load_cached(args)
    assert meta is not None, "assets/toy_base does not match the recipe: rebuild it (scripts/toy_base_asset.py)"
    assert meta["cpu_kernels"] == dict(sorted(PINNED_CPU_KERNELS.items()))
    assert meta["train_steps"] == args.base_max_steps
    import hashlib

    assert hashlib.sha256((SHIPPED_BASE / "model.safetensors").read_bytes()).hexdigest() == meta["weights_sha256"]
    assert "/tmp" not in json.dumps(meta) and "/work" not in json.dumps(meta)
    monkeypatch.delenv("MKL_CBWR")
    assert load_cached(args) is None  # other kernels: the stage would train a new base


@pytest.mark.slow
def test_a_rebuild_on_the_pinned_kernels_reproduces_the_shipped_base_bit_for_bit() -> None:
    """The 800-step build on the pinned kernels (about 6.5 CPU-minutes): the same weights as shipped."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "scripts" / "toy_base_asset.py"
    proc = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0 and "identical" in proc.stdout, proc.stdout + proc.stderr


def test_the_shipped_teacher_is_the_documented_one_and_solves_a_hard_world_problem() -> None:
    """assets/toy_teacher_hard (issue 25 item 1): the weights its README names, built as its marker says (clean
    corpus of the hard world, 2,000 steps), and a working chat model on the toy tokenizer: greedy on the first
    hard-world problem with one step it writes an answer line that parses (the teacher is right on 89.9% of those)."""
    import hashlib

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shared_schemas.answer import answers_equal, parse_answer
    from trainer.prompts import build_prompt
    from trainer.toy.problems import generate_problems

    teacher = Path(__file__).resolve().parents[1] / "assets" / "toy_teacher_hard"
    meta = json.loads((teacher / "TOY_BASE.json").read_text())
    sha = hashlib.sha256((teacher / "model.safetensors").read_bytes()).hexdigest()
    assert f"sha256 `{sha}`" in (teacher / "README.md").read_text()
    settings = meta["settings"]
    assert (settings["number_scale"], settings["n_pretrain"], settings["base_max_steps"]) == (1.0, 100000, 2000)
    assert settings["noise_wrong_step"] == 0 and settings["noise_other_format"] == 0
    tok = AutoTokenizer.from_pretrained(teacher)
    model = AutoModelForCausalLM.from_pretrained(teacher)
    problems = [p for p in generate_problems(200, seed=1, number_scale=1.0) if len(p.steps) == 1][:8]
    right = 0
    for p in problems:
        ids = tok(build_prompt(p.question, tok), return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=80, do_sample=False, pad_token_id=tok.pad_token_id)
        text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        answer = parse_answer(text).value
        assert answer is not None, text
        right += answers_equal(answer, str(p.answer_value))
    # 7 of 8 on the development machine; 5 leaves room for another CPU's arithmetic (the weights were trained, and
    # run here, on the CPU's own kernels) and still fails a model that has not learned the hard world
    assert right >= 5, f"{right} of 8 one-step hard-world problems right"
