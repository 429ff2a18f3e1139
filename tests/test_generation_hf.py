"""The ``hf`` generation backend over the tiny local Llama, and its per-row seeded sampler."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import torch

from fastgen import LogitsSampler, Mode, RowParams, select_tokens
from reward_service.generation import (
    ArmPrompt,
    BackendConfig,
    GenerationBackend,
    GenerationError,
    GenerationTimeout,
    create_backend,
)
from reward_service.generation.hf import HFBackend
from reward_service.generation.sampling import RowSampler
from tests.support.tiny_model import build_tiny_model

SYSTEM = "Solve step by step."


def arm(
    question: str,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_tokens: int = 6,
    seed: int = 0,
    name: str = "cot",
) -> ArmPrompt:
    return ArmPrompt(name, (("system", SYSTEM), ("user", question)), temperature, top_p, max_tokens, seed)


MIXED = [
    arm("Natalia sold 48 clips in April.", temperature=0.0, max_tokens=5),
    arm("Weng earns $12 an hour.", temperature=0.7, top_p=0.9, max_tokens=8, seed=1),
    arm("How many clips did Natalia sell?", temperature=1.0, top_p=1.0, max_tokens=3, seed=2),
    arm("Work backwards from the answer.", temperature=0.3, top_p=0.5, max_tokens=7, seed=3),
    arm("3 * 4 = 12 and 12 + 5 = 17.", temperature=0.0, max_tokens=2),
    arm("The final answer is 42.", temperature=0.6, top_p=0.95, max_tokens=6, seed=4),
]


@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> Iterator[HFBackend]:
    b = HFBackend(str(tiny_model_dir), device="cpu", batch_size=4)
    yield b
    b.close()


@pytest.fixture(scope="module")
def no_eos_backend(tiny_model_dir) -> Iterator[HFBackend]:
    b = HFBackend(str(tiny_model_dir), device="cpu", batch_size=4, ignore_eos=True)
    yield b
    b.close()


def test_create_backend_builds_hf(tiny_model_dir) -> None:
    b = create_backend(BackendConfig("hf", model=str(tiny_model_dir), device="cpu", batch_size=2))
    assert b is not None
    try:
        assert isinstance(b, GenerationBackend)
        assert b.name == "hf"
        assert b.model_id == str(tiny_model_dir)
        assert len(b.generate(MIXED[:3])) == 3
    finally:
        b.close()
    with pytest.raises(GenerationError, match="closed"):
        b.generate(MIXED[:1])


def test_one_text_per_prompt_in_order(backend: HFBackend) -> None:
    texts = backend.generate(MIXED)
    assert len(texts) == len(MIXED)
    assert all(isinstance(t, str) for t in texts)
    # Each prompt alone gives the same text as inside the mixed, re-ordered, chunked batch.
    assert [backend.generate([p])[0] for p in MIXED] == texts
    assert backend.generate(MIXED[::-1]) == texts[::-1]


def test_mixed_sampling_params_share_batches(backend: HFBackend) -> None:
    backend.generate(MIXED)
    stats = backend.last_stats
    assert stats is not None
    assert stats.prompts == len(MIXED)
    assert stats.batches == 2  # 6 prompts, batch_size 4: mixed temperatures / top_p / max_tokens share chunks
    assert stats.generated_tokens == sum(stats.tokens_per_prompt)


def test_per_arm_max_tokens_respected(backend: HFBackend, no_eos_backend: HFBackend) -> None:
    backend.generate(MIXED)
    assert backend.last_stats is not None
    for prompt, count in zip(MIXED, backend.last_stats.tokens_per_prompt):
        assert 0 <= count <= prompt.max_tokens
    no_eos_backend.generate(MIXED)
    assert no_eos_backend.last_stats is not None
    assert list(no_eos_backend.last_stats.tokens_per_prompt) == [p.max_tokens for p in MIXED]


def test_static_cache_mode_gives_the_same_texts(tiny_model_dir, backend: HFBackend) -> None:
    static = HFBackend(str(tiny_model_dir), device="cpu", batch_size=4, compile=True)  # static KV cache
    try:
        assert static.generate(MIXED) == backend.generate(MIXED)
    finally:
        static.close()


def test_greedy_is_deterministic_and_ignores_seed(backend: HFBackend) -> None:
    prompts = [arm("Natalia sold 48 clips in April.", max_tokens=8, seed=s) for s in range(3)]
    first = backend.generate(prompts)
    assert len(set(first)) == 1
    assert backend.generate(prompts) == first


def test_seeded_sampling_repeats_and_seeds_differ(backend: HFBackend) -> None:
    prompts = [arm("Weng earns $12 an hour.", temperature=1.0, max_tokens=8, seed=s) for s in range(6)]
    first = backend.generate(prompts)
    assert backend.generate(prompts) == first
    assert len(set(first)) > 1, "different seeds should give different samples"


def test_base_seed_changes_samples(tiny_model_dir, backend: HFBackend) -> None:
    other = HFBackend(str(tiny_model_dir), device="cpu", batch_size=4, seed=1234)
    try:
        prompts = [arm("Weng earns $12 an hour.", temperature=1.0, max_tokens=8, seed=s) for s in range(4)]
        assert other.generate(prompts) != backend.generate(prompts)
    finally:
        other.close()


def test_chat_template_used(backend: HFBackend) -> None:
    prompt = MIXED[0]
    rendered = backend.render(prompt)
    assert backend.has_chat_template
    assert rendered == f"<|system|>{SYSTEM}<|end|>\n<|user|>{prompt.messages[1][1]}<|end|>\n<|assistant|>"
    ids = backend.encode_prompts([prompt])[0]
    assert ids[-1] == backend.tokenizer.convert_tokens_to_ids("<|assistant|>")


def test_tokenizer_without_chat_template(tmp_path) -> None:
    path = build_tiny_model(tmp_path / "plain", chat_template=False)
    b = HFBackend(str(path), device="cpu", batch_size=8)
    try:
        assert not b.has_chat_template
        assert b.render(MIXED[0]) == f"{SYSTEM}\n\n{MIXED[0].messages[1][1]}\n\n"
        texts = b.generate(MIXED)
        assert len(texts) == len(MIXED) and b.generate(MIXED) == texts
    finally:
        b.close()


def test_template_without_system_role_gets_system_merged(tmp_path) -> None:
    path = build_tiny_model(tmp_path / "nosys")
    b = HFBackend(str(path), device="cpu")
    try:
        b.tokenizer.chat_template = (
            "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
            "{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}<|assistant|>"
        )
        assert b.render(MIXED[0]) == f"<|user|>{SYSTEM}\n\n{MIXED[0].messages[1][1]}<|end|>\n<|assistant|>"
    finally:
        b.close()


def test_count_tokens_matches_tokenizer(backend: HFBackend) -> None:
    texts = ["Natalia sold 48/2 = 24 clips in May.", "", "#### 72"]
    expected = [len(backend.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert backend.count_tokens(texts) == expected
    assert backend.count_tokens([]) == []


def test_thread_safe_concurrent_calls(backend: HFBackend) -> None:
    expected = backend.generate(MIXED)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(backend.generate(MIXED))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [expected] * 3


def test_deadline_raises_generation_timeout(tiny_model_dir) -> None:
    b = HFBackend(str(tiny_model_dir), device="cpu", timeout_s=1e-4, ignore_eos=True)
    try:
        with pytest.raises(GenerationTimeout, match="deadline"):
            b.generate([arm("Natalia sold 48 clips.", max_tokens=200)])
    finally:
        b.close()


def test_bad_model_path_is_a_generation_error(tmp_path) -> None:
    with pytest.raises(GenerationError, match="could not load model"):
        HFBackend(str(tmp_path / "missing"), device="cpu")


def test_empty_batch(backend: HFBackend) -> None:
    assert backend.generate([]) == []


def test_arm_prompt_validates() -> None:
    with pytest.raises(ValueError, match="top_p"):
        arm("q", top_p=0.0)
    with pytest.raises(ValueError, match="max_tokens"):
        arm("q", max_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        arm("q", temperature=-1.0)


# -- the per-row sampler: fastgen's, behind the service's RowSampler ------------------------------


def choose(processor: RowSampler | LogitsSampler, logits: torch.Tensor, step: int = 0) -> torch.Tensor:
    """The tokens ``processor`` picks at ``step``, called as ``generate`` calls it (a fresh processor:
    its first call is step 0, each call after it one token later)."""
    rows, width = logits.shape[0], 5
    if step:
        processor(torch.zeros((rows, width), dtype=torch.long), logits)
    out = processor(torch.zeros((rows, width + step), dtype=torch.long), logits)
    assert torch.isfinite(out).sum(dim=-1).tolist() == [1] * rows  # one-hot: generate's argmax is the choice
    return out.argmax(dim=-1)


def sample(logits: torch.Tensor, temperature: float, top_p: float, seeds: list[int], step: int = 0) -> torch.Tensor:
    n = len(seeds)
    return choose(RowSampler([temperature] * n, [top_p] * n, seeds), logits, step)


def test_sampler_rows_are_independent_of_the_batch() -> None:
    torch.manual_seed(0)
    logits = torch.randn(5, 50)
    temperatures = [0.0, 0.7, 1.0, 0.5, 1.3]
    top_ps = [1.0, 0.9, 1.0, 0.5, 0.95]
    seeds = [0, 11, 2**40 + 3, 7, 99]
    together = choose(RowSampler(temperatures, top_ps, seeds), logits, 4)
    perm = [3, 0, 4, 1, 2]
    permuted = choose(
        RowSampler([temperatures[i] for i in perm], [top_ps[i] for i in perm], [seeds[i] for i in perm]),
        logits[perm],
        4,
    )
    assert torch.equal(permuted, together[perm])
    for r in range(5):
        alone = choose(RowSampler([temperatures[r]], [top_ps[r]], [seeds[r]]), logits[r : r + 1], 4)
        assert int(alone) == int(together[r])
    assert int(together[0]) == int(logits[0].argmax())


def test_sampler_matches_the_softmax_distribution() -> None:
    n = 20000
    base = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    tokens = sample(base.repeat(n, 1), 0.8, 1.0, list(range(n)))
    freq = torch.bincount(tokens, minlength=5).float() / n
    expected = (base / 0.8).softmax(-1)
    assert torch.allclose(freq, expected, atol=0.015), (freq, expected)
    # Steps are independent streams too.
    later = sample(base.repeat(n, 1), 0.8, 1.0, list(range(n)), step=1)
    assert (later != tokens).float().mean() > 0.3


def test_sampler_top_p_keeps_only_the_nucleus() -> None:
    n = 4000
    base = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    tokens = sample(base.repeat(n, 1), 1.0, 0.75, list(range(n)), step=2)
    assert set(tokens.tolist()) == {1, 3}  # 0.5 + 0.3 >= 0.75: the 0.15 and 0.05 tokens are outside
    share = (tokens == 1).float().mean()
    assert abs(float(share) - 0.5 / 0.8) < 0.03  # renormalised inside the nucleus
    assert set(sample(base.repeat(n, 1), 1.0, 0.01, list(range(n)), step=2).tolist()) == {1}


def test_banned_ids_are_never_chosen() -> None:
    """``ignore_eos``: the eos ids are out of every row's choice, greedy rows take the next best."""
    logits = torch.tensor([[0.0, 5.0, 4.0, 1.0]]).repeat(300, 1)
    temperatures = [0.0] + [1.5] * 299
    tokens = choose(RowSampler(temperatures, [1.0] * 300, list(range(300)), banned=[1]), logits, 3)
    assert int(tokens[0]) == 2
    assert 1 not in tokens.tolist() and {0, 2, 3} <= set(tokens.tolist())
    assert 1 in choose(RowSampler(temperatures, [1.0] * 300, list(range(300))), logits, 3).tolist()


@pytest.mark.parametrize("step", [0, 1, 7, 1000])
def test_service_sampler_and_logits_sampler_are_fastgens_select_tokens(step: int) -> None:
    """One sampler: the service's RowSampler, fastgen's LogitsSampler (the ``generate`` processor the
    trainer and the fallback use) and the engine's select_tokens pick the same token for the same
    (logits, seed, step, temperature, top_p)."""
    torch.manual_seed(step)
    rows = 64
    logits = torch.randn(rows, 300) * 4
    temperatures = [[0.0, 0.3, 0.7, 1.0, 1.6][r % 5] for r in range(rows)]
    top_ps = [[1.0, 0.95, 0.5, 1.0, 0.8, 0.1][r % 6] for r in range(rows)]
    seeds = [r * 7919 + 2**33 * (r % 3) for r in range(rows)]
    engine = select_tokens(
        logits,
        RowParams.build(temperatures, top_ps, seeds, "cpu"),
        torch.full((rows,), step, dtype=torch.long),
        Mode.of(temperatures, top_ps),
    )
    service = choose(RowSampler(temperatures, top_ps, seeds), logits, step)
    processor = choose(LogitsSampler(temperatures, top_ps, seeds), logits, step)
    assert service.tolist() == engine.tolist() == processor.tolist()
    greedy = [r for r in range(rows) if temperatures[r] == 0]
    assert engine[greedy].tolist() == logits[greedy].argmax(dim=-1).tolist()
    assert len(set(engine.tolist())) > 10  # sampled rows spread: the comparison is not of argmaxes only


# -- the fastgen engine behind the hf backend -------------------------------------------------------


@pytest.fixture(scope="module")
def fast_backend(tiny_model_dir) -> Iterator[HFBackend]:
    b = HFBackend(str(tiny_model_dir), device="cpu", batch_size=2, generation_engine="fast")
    yield b
    b.close()


def test_fast_engine_produces_arms(fast_backend: HFBackend, backend: HFBackend) -> None:
    assert fast_backend.generation_engine == "fast"
    texts = fast_backend.generate(MIXED)
    assert len(texts) == len(MIXED) and all(isinstance(t, str) for t in texts)
    assert fast_backend.last_stats is not None
    for prompt, count in zip(MIXED, fast_backend.last_stats.tokens_per_prompt):
        assert 0 <= count <= prompt.max_tokens
    # every arm is the same text as the hf engine's: same model, and one sampler (fastgen's) for greedy
    # and sampled rows alike (only a near-tie flipped by the two forwards' rounding could tell them apart)
    assert texts == backend.generate(MIXED)
    # seeded: the same again, and independent of what else is in the call
    assert fast_backend.generate(MIXED) == texts
    assert fast_backend.generate([MIXED[1]]) == [texts[1]]


def test_fast_engine_ignore_eos_runs_every_budget(tiny_model_dir) -> None:
    b = HFBackend(str(tiny_model_dir), device="cpu", batch_size=4, ignore_eos=True, generation_engine="fast")
    try:
        b.generate(MIXED)
        assert b.last_stats is not None
        assert list(b.last_stats.tokens_per_prompt) == [p.max_tokens for p in MIXED]
    finally:
        b.close()


def test_generation_engine_auto_is_hf_on_the_cpu(backend: HFBackend, tiny_model_dir) -> None:
    assert backend.generation_engine == "hf"
    b = HFBackend(str(tiny_model_dir), device="cpu", generation_engine="auto")
    try:
        assert b.generation_engine == "hf"
    finally:
        b.close()
    with pytest.raises(ValueError):
        HFBackend(str(tiny_model_dir), device="cpu", generation_engine="turbo")
    with pytest.raises(ValueError, match="backend 'vllm'"):
        HFBackend(str(tiny_model_dir), device="cpu", generation_engine="vllm")
