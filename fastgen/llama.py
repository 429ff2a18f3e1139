"""A hand-written forward of the Llama family over a transformers model's own weight tensors.

Nothing is copied: the layers hold references to the HF module tensors, so an in-place update of
the model (a LoRA re-merge) is seen by the next step, CUDA graphs included. Supports RoPE (default,
linear and Llama-3 scaling, read from the model's rotary module), grouped-query attention, RMSNorm,
SwiGLU, optional q/k/v/o and MLP biases, and tied embeddings.

Two entry points over a :class:`fastgen.kv_cache.KVCache`: :func:`prefill` (a batch of right-padded prompts into given cache slots, causal
attention, logits of each prompt's last token) and :func:`decode` (one token for every slot at its
own position, attention over the cache up to ``kv_len``; no host synchronisation, so it can be
captured as a CUDA graph).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fastgen.kv_cache import KVCache
from fastgen.types import UnsupportedModel

__all__ = ["LayerWeights", "LlamaWeights", "prefill", "decode"]

_ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True, slots=True)
class LayerWeights:
    ln1: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    o: torch.Tensor
    qb: torch.Tensor | None
    kb: torch.Tensor | None
    vb: torch.Tensor | None
    ob: torch.Tensor | None
    ln2: torch.Tensor
    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor
    gate_b: torch.Tensor | None
    up_b: torch.Tensor | None
    down_b: torch.Tensor | None


def _linear_of(module: Any, what: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if type(module) is not torch.nn.Linear:
        raise UnsupportedModel(
            f"{what} is a {type(module).__name__}, not a plain Linear (quantized or LoRA layers: "
            "decode from a merged bf16 copy)"
        )
    if not module.weight.dtype.is_floating_point:
        raise UnsupportedModel(f"{what} has non-float weights ({module.weight.dtype})")
    return module.weight, module.bias


@dataclass(frozen=True, slots=True)
class LlamaWeights:
    """The tensors and shapes the forward needs, read from a ``LlamaForCausalLM``."""

    embed: torch.Tensor
    layers: tuple[LayerWeights, ...]
    norm: torch.Tensor
    lm_head: torch.Tensor
    eps: float
    n_heads: int
    n_kv_heads: int
    head_dim: int
    inv_freq: torch.Tensor
    rope_scaling: float

    @property
    def device(self) -> torch.device:
        return self.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.dtype

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def vocab_size(self) -> int:
        return int(self.lm_head.shape[0])

    @staticmethod
    def from_model(model: Any) -> LlamaWeights:
        """Read ``model``'s tensors; :class:`UnsupportedModel` when it is not a plain Llama."""
        config: Any = getattr(model, "config", None)
        if getattr(config, "model_type", None) != "llama":
            raise UnsupportedModel(f"model_type {getattr(config, 'model_type', None)!r} is not 'llama'")
        if getattr(config, "hidden_act", "silu") != "silu":
            raise UnsupportedModel(f"hidden_act {config.hidden_act!r} is not silu")
        inner: Any = getattr(model, "model", None)
        rotary = getattr(inner, "rotary_emb", None)
        rope_type = getattr(rotary, "rope_type", "default")
        if rotary is None or rope_type not in _ROPE_TYPES:
            raise UnsupportedModel(f"rope type {rope_type!r} is not one of {_ROPE_TYPES}")
        lm_head, lm_bias = _linear_of(model.lm_head, "lm_head")
        if lm_bias is not None:
            raise UnsupportedModel("lm_head has a bias")
        layers = []
        for i, layer in enumerate(inner.layers):
            attn, mlp = layer.self_attn, layer.mlp
            q, qb = _linear_of(attn.q_proj, f"layer {i} q_proj")
            k, kb = _linear_of(attn.k_proj, f"layer {i} k_proj")
            v, vb = _linear_of(attn.v_proj, f"layer {i} v_proj")
            o, ob = _linear_of(attn.o_proj, f"layer {i} o_proj")
            gate, gate_b = _linear_of(mlp.gate_proj, f"layer {i} gate_proj")
            up, up_b = _linear_of(mlp.up_proj, f"layer {i} up_proj")
            down, down_b = _linear_of(mlp.down_proj, f"layer {i} down_proj")
            layers.append(
                LayerWeights(
                    layer.input_layernorm.weight,
                    q,
                    k,
                    v,
                    o,
                    qb,
                    kb,
                    vb,
                    ob,
                    layer.post_attention_layernorm.weight,
                    gate,
                    up,
                    down,
                    gate_b,
                    up_b,
                    down_b,
                )
            )
        n_heads = int(config.num_attention_heads)
        head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // n_heads)
        return LlamaWeights(
            embed=inner.embed_tokens.weight,
            layers=tuple(layers),
            norm=inner.norm.weight,
            lm_head=lm_head,
            eps=float(config.rms_norm_eps),
            n_heads=n_heads,
            n_kv_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
            head_dim=head_dim,
            inv_freq=rotary.inv_freq.detach().float().clone(),
            rope_scaling=float(getattr(rotary, "attention_scaling", 1.0)),
        )


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    dtype = x.dtype
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _mlp(h: torch.Tensor, lw: LayerWeights) -> torch.Tensor:
    gate = F.silu(F.linear(h, lw.gate, lw.gate_b))
    return F.linear(gate * F.linear(h, lw.up, lw.up_b), lw.down, lw.down_b)


def prefill(
    w: LlamaWeights, cache: KVCache, ids: torch.Tensor, lengths: torch.Tensor, slots: torch.Tensor
) -> torch.Tensor:
    """Run right-padded prompts ``ids (n, T)`` into cache ``slots (n,)``; logits ``(n, vocab)`` of each
    prompt's last real token (``lengths (n,)``). Padding positions write cache entries that the slot's
    decoding overwrites before it ever attends to them."""
    n, t = ids.shape
    x = w.embed[ids]
    cos, sin = cache.cos[:t][None, None], cache.sin[:t][None, None]
    for i, lw in enumerate(w.layers):
        h = _rms_norm(x, lw.ln1, w.eps)
        q = F.linear(h, lw.q, lw.qb).view(n, t, w.n_heads, w.head_dim).transpose(1, 2)
        k = F.linear(h, lw.k, lw.kb).view(n, t, w.n_kv_heads, w.head_dim).transpose(1, 2)
        v = F.linear(h, lw.v, lw.vb).view(n, t, w.n_kv_heads, w.head_dim).transpose(1, 2)
        q, k = _rope(q, cos, sin), _rope(k, cos, sin)
        cache.k[i, slots, :, :t] = k
        cache.v[i, slots, :, :t] = v
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=w.n_heads != w.n_kv_heads)
        x = x + F.linear(a.transpose(1, 2).reshape(n, t, w.n_heads * w.head_dim), lw.o, lw.ob)
        x = x + _mlp(_rms_norm(x, lw.ln2, w.eps), lw)
    last = x[torch.arange(n, device=x.device), lengths - 1]
    return F.linear(_rms_norm(last, w.norm, w.eps), w.lm_head)


def decode(w: LlamaWeights, cache: KVCache, tokens: torch.Tensor, positions: torch.Tensor, kv_len: int) -> torch.Tensor:
    """One step for every slot: ``tokens (B,)`` at ``positions (B,)`` -> logits ``(B, vocab)``.

    Each slot writes its key/value at its own position, then attends to cache entries ``<= position``
    among the first ``kv_len`` (``kv_len`` must exceed every live slot's position)."""
    b = tokens.shape[0]
    groups = w.n_heads // w.n_kv_heads
    rows = torch.arange(b, device=tokens.device)
    x = w.embed[tokens]
    cos, sin = cache.cos[positions][:, None], cache.sin[positions][:, None]
    visible = torch.arange(kv_len, device=tokens.device)[None, :] <= positions[:, None]
    bias = torch.zeros((b, kv_len), dtype=torch.float32, device=tokens.device)
    bias = bias.masked_fill(~visible, float("-inf"))[:, None, None, :]
    scale = w.head_dim**-0.5
    for i, lw in enumerate(w.layers):
        h = _rms_norm(x, lw.ln1, w.eps)
        q = _rope(F.linear(h, lw.q, lw.qb).view(b, w.n_heads, w.head_dim), cos, sin)
        k = _rope(F.linear(h, lw.k, lw.kb).view(b, w.n_kv_heads, w.head_dim), cos, sin)
        v = F.linear(h, lw.v, lw.vb).view(b, w.n_kv_heads, w.head_dim)
        kc, vc = cache.k[i], cache.v[i]
        kc[rows, :, positions] = k
        vc[rows, :, positions] = v
        qg = q.view(b, w.n_kv_heads, groups, w.head_dim)
        scores = torch.matmul(qg, kc[:, :, :kv_len].transpose(-1, -2)).float() * scale + bias
        probs = scores.softmax(dim=-1).to(vc.dtype)
        a = torch.matmul(probs, vc[:, :, :kv_len]).reshape(b, w.n_heads * w.head_dim)
        x = x + F.linear(a, lw.o, lw.ob)
        x = x + _mlp(_rms_norm(x, lw.ln2, w.eps), lw)
    return F.linear(_rms_norm(x, w.norm, w.eps), w.lm_head)
