"""fastgen's parts on their own, without a model: the scheduler, the KV cache and slot state, the sampler's
``generate`` processor. Hand-worked cases; the engine as a whole is tests/test_fastgen.py."""

from __future__ import annotations

import math

import pytest
import torch

from fastgen import LogitsSampler, Mode, Request, RowParams, seed_keys, select_tokens, uniforms
from fastgen.kv_cache import KVCache, SlotState, StaticCache, attention_length, cache_positions
from fastgen.scheduler import Scheduler

# -- the scheduler ------------------------------------------------------------------------------------


def req(prompt_len: int, new: int, temperature: float = 0.0, top_p: float = 1.0) -> Request:
    return Request(list(range(1, prompt_len + 1)), new, temperature=temperature, top_p=top_p)


def test_admission_is_longest_prompt_first_into_the_lowest_free_slots() -> None:
    requests = [req(2, 4), req(5, 1), req(3, 2), req(5, 3)]
    s = Scheduler(requests, slots=2)
    assert s.waiting == 4 and s.busy() and s.live() == []
    # prompts 5, 5 (stable: request 1 before 3), then 3, then 2
    assert s.admit() == [(0, 1), (1, 3)]
    assert s.admit() == []  # no free slot
    assert s.reach == [5, 5] and s.waiting == 2
    # slot 0 (request 1, one new token) finished; slot 1's done flag is not set
    assert s.retire([True, False]) == [(0, 1)]
    assert s.live() == [1]
    assert s.admit() == [(0, 2)]  # refilled with the next longest
    assert s.reach == [3, 5]


def test_retire_ignores_free_slots_and_frees_the_finished() -> None:
    s = Scheduler([req(3, 2)], slots=3)
    assert s.admit() == [(0, 0)]
    assert s.retire([False, True, True]) == []  # slots 1 and 2 are free: their flags mean nothing
    assert s.retire([True, True, True]) == [(0, 0)]
    assert not s.busy() and s.live() == []


def test_reach_advances_per_step_and_stops_at_the_budget() -> None:
    # prompt 3 + 2 new tokens: positions 3 and 4 are written (the first new token at 3, by the
    # first decode step); the last position a step can write is 3 + 2 - 1 = 4
    s = Scheduler([req(3, 2), req(6, 5)], slots=2)
    assert s.admit() == [(0, 1), (1, 0)]
    assert s.top_position() == 6
    s.advance()
    assert s.reach == [7, 4]
    s.advance()
    s.advance()
    assert s.reach == [9, 4]  # slot 1 capped at 4; slot 0 at 6 + 5 - 1 = 10 not reached yet
    s.advance()
    s.advance()
    assert s.reach == [10, 4] and s.top_position() == 10


def test_mode_is_that_of_the_live_rows() -> None:
    s = Scheduler([req(4, 3), req(3, 3, temperature=0.7), req(2, 3, temperature=0.7, top_p=0.9)], slots=2)
    assert s.mode() == Mode.GREEDY  # nothing live yet
    s.admit()  # requests 0 (greedy) and 1 (sampled, top_p 1)
    assert s.mode() == Mode.SAMPLE
    s.retire([True, True])
    s.admit()  # request 2 alone
    assert s.mode() == Mode.TOP_P


def test_scheduler_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="slots"):
        Scheduler([req(1, 1)], slots=0)


# -- the KV cache -------------------------------------------------------------------------------------


class Geometry:
    """A model's cache geometry written out: 2 layers, 3 kv heads of 4 dims, RoPE frequencies 1 and 1/2, scaling 2."""

    num_layers = 2
    n_kv_heads = 3
    head_dim = 4
    dtype = torch.float32
    device = torch.device("cpu")
    rope_scaling = 2.0

    def __init__(self) -> None:
        self.inv_freq = torch.tensor([1.0, 0.5])


@pytest.mark.parametrize(
    ("seq_len", "bucket", "fixed", "positions"),
    [(5, 8, None, 8), (8, 8, None, 8), (9, 8, None, 16), (1, 256, None, 256), (5, 8, 12, 12), (12, 8, 12, 12)],
)
def test_cache_positions(seq_len: int, bucket: int, fixed: int | None, positions: int) -> None:
    assert cache_positions(seq_len, kv_bucket=bucket, max_seq_len=fixed) == positions


def test_cache_positions_past_a_fixed_length_is_an_error() -> None:
    with pytest.raises(ValueError, match="needs 13 positions but max_seq_len is 12"):
        cache_positions(13, kv_bucket=8, max_seq_len=12)


@pytest.mark.parametrize(
    ("top", "cache_len", "length"), [(0, 64, 8), (7, 64, 8), (8, 64, 16), (60, 64, 64), (70, 64, 64)]
)
def test_attention_length(top: int, cache_len: int, length: int) -> None:
    # position ``top`` must be visible: ceil((top + 1) / 8) * 8, at most the cache
    assert attention_length(top, cache_len=cache_len, kv_bucket=8) == length


def test_kv_cache_shape_and_rope_tables() -> None:
    kv = KVCache.allocate(Geometry(), slots=5, seq_len=3)
    assert kv.k.shape == kv.v.shape == (2, 5, 3, 3, 4)  # (layers, slots, kv heads, positions, head dim)
    assert kv.seq_len == 3 and kv.slots == 5
    assert not kv.k.any() and not kv.v.any()
    # angle(position p, frequency f) = p * f, both halves of the head; times the scaling 2
    expected_cos = [[2 * math.cos(p * f) for f in (1.0, 0.5, 1.0, 0.5)] for p in range(3)]
    expected_sin = [[2 * math.sin(p * f) for f in (1.0, 0.5, 1.0, 0.5)] for p in range(3)]
    assert torch.allclose(kv.cos, torch.tensor(expected_cos))
    assert torch.allclose(kv.sin, torch.tensor(expected_sin))


def test_static_cache_grows_for_longer_calls_and_never_shrinks() -> None:
    cache = StaticCache(Geometry(), slots=2, max_stop_ids=3, kv_bucket=8, max_seq_len=None)
    assert not cache.fits(5, 2)  # nothing held
    cache.grow(5)
    assert cache.kv is not None and cache.state is not None
    first = cache.kv.k
    assert cache.kv.seq_len == 8 and cache.state.max_new == 8 and cache.state.stop.shape == (2, 3)
    assert cache.fits(8, 7)  # a shorter call reuses the same tensors
    assert not cache.fits(9, 2)
    cache.grow(9)
    assert cache.kv.seq_len == 16 and cache.kv.k is not first
    cache.grow(3)  # growing for less keeps the larger size
    assert cache.kv.seq_len == 16
    cache.release()
    assert cache.kv is None and cache.state is None and not cache.fits(3, 1)


def test_slot_state_load_finished_and_tokens() -> None:
    state = SlotState(slots=3, max_new=4, max_stop=2, device=torch.device("cpu"))
    assert state.finished() == [True, True, True]  # every slot starts free
    params = RowParams.build([0.0, 0.8], [1.0, 0.9], [1, 2], "cpu")
    slots = torch.tensor([2, 0])
    # slot 2: first token 7, budget 3, stop ids (9,); slot 0: first token 9 = its stop id
    state.load(
        slots,
        first=torch.tensor([7, 9]),
        lengths=torch.tensor([5, 2]),
        limit=torch.tensor([3, 4]),
        stop=torch.tensor([[9, -1], [9, 4]]),
        params=params,
    )
    assert state.finished() == [True, True, False]  # slot 0 stopped at once; slot 1 is still free
    assert state.positions.tolist() == [2, 0, 5] and state.steps.tolist() == [1, 0, 1]
    assert state.tokens_of([2, 0]) == [[7], [9]]
    assert state.params.sampled.tolist() == [True, False, False]
    assert state.params.top_p.tolist() == pytest.approx([0.9, 2.0, 2.0])
    one = RowParams.build([0.0], [1.0], [3], "cpu")
    state.load(
        torch.tensor([1]), torch.tensor([3]), torch.tensor([4]), torch.tensor([1]), torch.tensor([[-1, -1]]), one
    )
    assert state.finished()[1]  # a budget of one token is done after prefill


# -- the sampler as a generate logits processor -------------------------------------------------------


def test_uniforms_are_uniform_in_the_open_unit_interval() -> None:
    u = uniforms(seed_keys(torch.arange(100_000)), torch.full((100_000,), 3))
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0
    hist = torch.histc(u, bins=10, min=0.0, max=1.0) / u.numel()
    assert torch.allclose(hist, torch.full((10,), 0.1), atol=0.005)


def test_logits_sampler_counts_steps_from_its_first_call() -> None:
    torch.manual_seed(3)
    logits = torch.randn(4, 30) * 3
    temperatures, top_ps, seeds = [0.0, 1.0, 0.7, 1.2], [1.0, 1.0, 0.6, 0.9], [4, 5, 6, 7]
    sampler = LogitsSampler(temperatures, top_ps, seeds)
    params = RowParams.build(temperatures, top_ps, seeds, "cpu")
    for step in range(6):  # the prompt is 9 tokens wide; generate appends one per call
        out = sampler(torch.zeros((4, 9 + step), dtype=torch.long), logits)
        assert torch.isfinite(out).sum().item() == 4 and out.max().item() == 0.0
        expected = select_tokens(logits, params, torch.full((4,), step), Mode.TOP_P)
        assert out.argmax(dim=-1).tolist() == expected.tolist()


def test_logits_sampler_from_specs_reads_each_row() -> None:
    specs = [Request([1], 3, temperature=0.9, top_p=0.8, seed=11), Request([1, 2], 3)]
    sampler = LogitsSampler.from_specs(specs)
    assert (sampler.temperatures, sampler.top_ps, sampler.seeds) == ([0.9, 0.0], [0.8, 1.0], [11, 0])
    assert sampler.rows == 2 and sampler.mode == Mode.TOP_P


def test_logits_sampler_validates() -> None:
    with pytest.raises(ValueError, match="one temperature, top_p and seed per row, got 2, 1 and 2"):
        LogitsSampler([0.0, 1.0], [1.0], [1, 2])
    with pytest.raises(ValueError, match="at least one row"):
        LogitsSampler([], [], [])
    with pytest.raises(ValueError, match="temperature"):
        LogitsSampler([-0.1], [1.0], [0])
    with pytest.raises(ValueError, match="top_p"):
        LogitsSampler([1.0], [0.0], [0])
    sampler = LogitsSampler([1.0, 1.0], [1.0, 1.0], [0, 1])
    with pytest.raises(ValueError, match="LogitsSampler has 2 rows but the batch has 3"):
        sampler(torch.zeros((3, 4), dtype=torch.long), torch.zeros(3, 10))
