"""fastgen: the engine's decode against transformers, seeded sampling independent of the batch, refill."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fastgen import Completion, Engine, EngineConfig, GenerateFallback, Request, build_engine, resolve_engine
from fastgen.sampling import Mode, RowParams, select_tokens

VOCAB = 96


def tiny_llama(*, tied: bool = False, rope_scaled: bool = False, kv_heads: int = 2, seed: int = 0) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": 10000.0}
    if rope_scaled:
        rope = {
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        }
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=512,
        tie_word_embeddings=tied,
        rope_parameters=rope,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights than the init: peaked distributions, no near-ties in argmax
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return model


def prompts(n: int, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(3, VOCAB, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g).tolist() for _ in range(n)
    ]


def hf_greedy(model: Any, ids: list[int], new: int) -> list[int]:
    out = model.generate(torch.tensor([ids]), max_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
    return list(out[0, len(ids) :].tolist())


@pytest.mark.parametrize(
    "kwargs", [{}, {"tied": True}, {"rope_scaled": True}, {"kv_heads": 4}], ids=["gqa", "tied", "llama3-rope", "mha"]
)
def test_greedy_matches_transformers_generate(kwargs: dict[str, Any]) -> None:
    model = tiny_llama(**kwargs)
    engine = Engine(model, EngineConfig(slots=3, kv_bucket=8, sync_every=4))
    batch = prompts(5)
    got = engine.generate([Request(p, 20) for p in batch])
    for p, c in zip(batch, got, strict=True):
        assert c.token_ids == hf_greedy(model, p, 20)
        assert not c.finished


def test_sampled_row_is_the_same_alone_in_a_batch_and_refilled() -> None:
    model = tiny_llama()
    target = Request(prompts(1, seed=7)[0], 24, temperature=0.9, top_p=0.9, seed=1234)
    alone = Engine(model, EngineConfig(slots=1)).generate([target])[0]
    others = [
        Request(p, 5 + 3 * k, temperature=0.7 * (k % 2), top_p=1.0 if k % 3 else 0.8, seed=k)
        for k, p in enumerate(prompts(6, seed=3))
    ]
    # In a full batch, first.
    batched = Engine(model, EngineConfig(slots=4, kv_bucket=8)).generate([target, *others])
    assert batched[0] == alone
    # Queued last behind short requests: it is refilled into whichever slot frees first.
    refilled = Engine(model, EngineConfig(slots=3, kv_bucket=8, sync_every=2)).generate([*others, target])
    assert refilled[-1] == alone
    # Other seeds give other samples (the seed is used).
    other_seed = Engine(model, EngineConfig(slots=1)).generate([Request(target.prompt_ids, 24, 0.9, 0.9, seed=99)])
    assert other_seed[0].token_ids != alone.token_ids


def test_sampling_only_with_top_p_one_is_the_same_in_every_mode() -> None:
    logits = torch.randn(3, VOCAB) * 3
    params = RowParams.build([0.8, 0.0, 1.2], [1.0, 1.0, 0.7], [5, 6, 7], "cpu")
    steps = torch.tensor([0, 4, 9])
    top_p = select_tokens(logits, params, steps, Mode.TOP_P)
    sample = select_tokens(logits[:2], RowParams.build([0.8, 0.0], [1.0, 1.0], [5, 6], "cpu"), steps[:2], Mode.SAMPLE)
    assert top_p[:2].tolist() == sample.tolist()
    assert int(top_p[1]) == int(logits[1].argmax())


def test_stop_tokens_and_budgets() -> None:
    model = tiny_llama()
    p = prompts(1, seed=11)[0]
    free = hf_greedy(model, p, 12)
    stop = free[4]
    cut = free.index(stop)
    engine = Engine(model, EngineConfig(slots=2, kv_bucket=8))
    stopped, short, one = engine.generate([Request(p, 12, stop_ids=[stop]), Request(p, 7), Request(p, 1)])
    assert stopped == Completion(free[: cut + 1], True)
    assert short == Completion(free[:7], False)
    assert one == Completion(free[:1], False)


def test_refill_serves_more_requests_than_slots() -> None:
    model = tiny_llama()
    batch = prompts(9, seed=5)
    reqs = [Request(p, 3 + (k * 5) % 11, temperature=0.0 if k % 2 else 1.0, seed=k) for k, p in enumerate(batch)]
    seen: list[int] = []
    got = Engine(model, EngineConfig(slots=2, kv_bucket=4, sync_every=3)).generate(
        reqs, on_complete=lambda i, c: seen.append(i)
    )
    assert sorted(seen) == list(range(9))
    for r, c in zip(reqs, got, strict=True):
        assert len(c.token_ids) == r.max_new_tokens
        assert c == Engine(model, EngineConfig(slots=1)).generate([r])[0]


def test_cache_grows_for_a_longer_call() -> None:
    model = tiny_llama()
    engine = Engine(model, EngineConfig(slots=2, kv_bucket=8))
    p = prompts(1)[0]
    assert engine.generate([Request(p, 4)])[0].token_ids == hf_greedy(model, p, 4)
    assert engine.generate([Request(p, 40)])[0].token_ids == hf_greedy(model, p, 40)


def test_other_architectures_fall_back_to_generate() -> None:
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, pad_token_id=0, eos_token_id=2,
    )  # fmt: skip
    model = MistralForCausalLM(config).eval()
    engine = build_engine(model, EngineConfig(slots=2))
    assert isinstance(engine, GenerateFallback)
    p = prompts(1)[0]
    greedy, sampled = engine.generate([Request(p, 6), Request(p, 6, temperature=1.0, seed=3)])
    assert greedy.token_ids == hf_greedy(model, p, 6)
    assert len(sampled.token_ids) == 6


def test_resolve_engine() -> None:
    assert resolve_engine("auto", "cpu") == "hf"
    assert resolve_engine("auto", "cuda") == "fast"
    assert resolve_engine("fast", "cpu") == "fast"
    with pytest.raises(ValueError):
        resolve_engine("vllm", "cpu")


def test_requests_are_validated() -> None:
    with pytest.raises(ValueError):
        Request([], 4)
    with pytest.raises(ValueError):
        Request([1], 0)
    with pytest.raises(ValueError):
        Request([1], 4, top_p=0.0)


# -- the trainer's generate_texts with engine="fast" ---------------------------------------------------


def test_generate_texts_with_the_fast_engine(tmp_path: Any) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tests.support.tiny_model import build_tiny_model
    from trainer.generation import SamplingSpec, generate_texts, release_fast_engine

    path = build_tiny_model(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    prompts_ = ["What is 2+3?", "Natalia sold 48 clips in April.", "Weng earns $12 an hour."]
    specs = [SamplingSpec(), SamplingSpec(temperature=0.8, top_p=0.9, seed=3), SamplingSpec(temperature=1.0, seed=4)]
    finished: list[int] = []
    try:
        fast = generate_texts(
            model, tok, prompts_, specs, max_new_tokens=8, batch_size=2, engine="fast", on_batch=finished.append
        )
        hf = generate_texts(model, tok, prompts_, specs, max_new_tokens=8, batch_size=2, engine="hf")
        assert sum(finished) == 3
        assert all(1 <= g.num_tokens <= 8 and isinstance(g.text, str) for g in fast)
        assert fast[0] == hf[0]  # greedy: the same tokens either way
        again = generate_texts(model, tok, prompts_[1:2], specs[1:2], max_new_tokens=8, batch_size=2, engine="fast")
        assert again == fast[1:2]  # seeded, independent of the batch
        # auto on the CPU is today's path
        auto = generate_texts(model, tok, prompts_, specs, max_new_tokens=8, batch_size=2, engine="auto")
        assert auto == hf
    finally:
        release_fast_engine()
