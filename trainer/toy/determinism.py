"""The toy world's CPU arithmetic, pinned: the same numbers on one machine, and mostly across CPU families.

The toy world's learning tests compare accuracy counts of models trained from scratch on the CPU. The
same program computes different floats on different CPU families: oneMKL picks its matrix kernels by
vendor and instruction set, and PyTorch's own vectorized kernels (softmax, norms, attention,
elementwise) run their AVX-512 build where the CPU has it and their AVX2 build elsewhere. Each
difference is tiny, but a model trained for hundreds of steps and then sampled amplifies it into a
different model: on an AMD EPYC the default toy loop gave base / SFT / DPO / GRPO = 302 / 316 /
334 / 324 of 800 dev problems where the earlier sessions' machine gave 338 / 353 / 385 / 408 (issue 21).

Every process of the toy world therefore runs with these kernels pinned (``PINNED_CPU_KERNELS``, set by
``subprocess_env`` below), which removes the differences named here:

- ``MKL_CBWR=COMPATIBLE``: oneMKL's Conditional Numerical Reproducibility on its COMPATIBLE branch, the
  one branch that gives the same results on Intel and non-Intel processors (oneMKL developer guide,
  "Getting Started with Conditional Numerical Reproducibility"). The AVX2 branch is refused on AMD:
  there ``MKL_VERBOSE=1`` shows ``CNR:AUTO``, i.e. the vendor's own kernels again.
- ``ATEN_CPU_CAPABILITY=avx2``: PyTorch's vectorized kernels use their AVX2 build on every CPU, also on
  one with AVX-512. (Every x86-64 server CPU of the last ten years has AVX2; one without it would fall
  back to the DEFAULT build and compute other numbers.)
- ``ONEDNN_MAX_CPU_ISA=AVX2``: oneDNN, where PyTorch uses it, generates AVX2 code at most.

With one thread per process (``OMP_NUM_THREADS=MKL_NUM_THREADS=1``, also set there) a run is bit for bit
the same on one machine, idle or loaded. Across CPU families the pins are not the whole story (measured,
docs/toy-results.md, "Which CPUs"): on an AMD EPYC (Zen 3) and an Intel Xeon (Sapphire Rapids) the
fingerprint of ``bench/cpu_arithmetic.py`` and the learning loop's SFT and DPO from the shipped toy base are
the same, but a GRPO run is not (seed 0: the majority-vote control 302 vs 321 of 800) and neither is a toy
base rebuilt from scratch (final loss 0.1972 vs 0.1913); which kernel still differs is not found yet. The
price of the pins is speed: the COMPATIBLE branch is SSE2 code, about 2x slower for the toy model's matrix
products (``python bench/cpu_arithmetic.py`` prints both fingerprints and times). Outside the toy world (real
models, GPUs) nothing is pinned.
"""

from __future__ import annotations

import os

__all__ = ["PINNED_CPU_KERNELS", "subprocess_env"]

PINNED_CPU_KERNELS: dict[str, str] = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}


def subprocess_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Offline, deterministic thread count, the CPU kernels pinned (see the module's docstring for what
    that makes the same across CPU families), no tokenizer fork warnings."""
    return {
        **os.environ,
        **PINNED_CPU_KERNELS,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        **(extra or {}),
    }
