"""fastgen on a GPU in float32: greedy equals transformers greedy, and a sampled row is the same alone and in a batch.

bf16 random weights give near-ties at almost every step, so ``bench/generate_engine.py``'s bf16 checks cannot tell
an engine bug from rounding; float32 can. A random Llama of a small shape (GQA, Llama-3 RoPE scaling), CUDA graphs
on, more requests than slots (refill).

    python bench/fastgen_gpu_check.py --out bench/results/fastgen_gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    from transformers import LlamaConfig, LlamaForCausalLM

    from fastgen import Engine, EngineConfig, Request

    config = LlamaConfig(
        vocab_size=2048,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 512,
        },
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to("cuda", torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    lengths = [17, 40, 64, 9, 33, 51, 25, 12, 70, 44]
    prompts = [torch.randint(3, 2048, (n,), generator=g).tolist() for n in lengths]
    new = 48
    engine = Engine(model, EngineConfig(slots=4))  # 10 requests through 4 slots: refills
    fast = [c.token_ids for c in engine.generate([Request(p, new) for p in prompts])]
    agree = []
    for p, f in zip(prompts, fast, strict=True):
        ids = torch.tensor([p], device="cuda")
        with torch.inference_mode():
            ref = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )
        r = ref[0, len(p) :].tolist()
        agree.append(next((k for k, (a, b) in enumerate(zip(f, r, strict=True)) if a != b), new))
    sampled = [Request(p, new, temperature=0.8, top_p=0.9, seed=100 + i) for i, p in enumerate(prompts)]
    batch = [c.token_ids for c in engine.generate(sampled)]
    alone = [Engine(model, EngineConfig(slots=1)).generate([r])[0].token_ids for r in sampled[:4]]
    result = {
        "gpu": torch.cuda.get_device_name(),
        "dtype": "float32",
        "greedy_tokens_matching_transformers_before_first_difference": agree,
        "new_tokens": new,
        "sampled_rows_alone_equal_in_batch": [a == b for a, b in zip(alone, batch[:4], strict=True)],
        "graphs_captured": engine.graphs_captured,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
