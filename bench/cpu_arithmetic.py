"""Is the CPU arithmetic of the toy world the same on two machines? A fingerprint of a tiny training run.

Trains a small transformer block stack (embedding, attention through ``scaled_dot_product_attention``,
RMS norm, SiLU MLP, AdamW: the ops of the toy Llama) for a few steps on one thread, samples from it,
and prints the SHA-256 of the final weights and samples, once with the process's environment as it is
and once in a child process with the pinned kernels of ``trainer.toy.determinism`` (``PINNED_CPU_KERNELS``).
Run it on two machines (e.g. an Intel and an AMD CPU): equal pinned fingerprints mean the toy world
computes the same numbers there; unequal default fingerprints show that it would not without the pins.

    python bench/cpu_arithmetic.py [--steps 30] [--out result.json]

Pure torch (no transformers): runs with the torch of any image, the GPU machines' too (on the CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, also where it is not installed

from trainer.toy.determinism import PINNED_CPU_KERNELS as PINNED


def fingerprint(steps: int) -> dict[str, object]:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    vocab, dim, hidden, layers, heads, seq, batch = 768, 96, 256, 3, 4, 96, 32

    def param(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.05).requires_grad_()

    emb = param(vocab, dim)
    blocks = [
        {"qkv": param(3 * dim, dim), "o": param(dim, dim), "up": param(2 * hidden, dim), "down": param(dim, hidden)}
        for _ in range(layers)
    ]
    params = [emb, *(p for b in blocks for p in b.values())]
    opt = torch.optim.AdamW(params, lr=3e-3)

    def rms(x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    def forward(ids: torch.Tensor) -> torch.Tensor:
        x = emb[ids]
        b, t, _ = x.shape
        for blk in blocks:
            q, k, v = F.linear(rms(x), blk["qkv"]).view(b, t, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, dim)
            x = x + F.linear(a, blk["o"])
            gate, up = F.linear(rms(x), blk["up"]).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, blk["down"])
        return F.linear(rms(x), emb)

    ids = torch.randint(0, vocab, (batch, seq), generator=g)
    started = time.perf_counter()
    for _ in range(steps):
        logits = forward(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        probs = torch.softmax(forward(ids[:4, :32])[:, -1], dim=-1)
        samples = torch.multinomial(probs, 16, replacement=True, generator=torch.Generator().manual_seed(1))
    digest = hashlib.sha256()
    for p in params:
        digest.update(p.detach().numpy().tobytes())
    digest.update(samples.numpy().tobytes())
    return {
        "sha256": digest.hexdigest()[:24],
        "loss": loss.item(),
        "train_seconds": round(seconds, 2),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(fingerprint(args.steps)))
        return
    base = {k: v for k, v in os.environ.items() if k not in PINNED}
    base.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result: dict[str, object] = {"cpu": cpu_model(), "steps": args.steps}
    for name, env in (("default", base), ("pinned", {**base, **PINNED})):
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--steps", str(args.steps)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        result[name] = json.loads(out.stdout.strip().splitlines()[-1])
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
