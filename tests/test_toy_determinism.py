"""The toy world's processes compute with pinned CPU kernels (issue 21, ``trainer.toy.determinism``).

The pins only help if the processes the loop starts really run with them: a child started with
``subprocess_env`` must report oneMKL's COMPATIBLE reproducibility branch (``MKL_VERBOSE``) and
PyTorch's AVX2 kernels, whatever this CPU offers. The equality of the numbers across CPU families
is measured with ``bench/cpu_arithmetic.py`` on two machines (README, "Tests").
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.limits import HANG_GUARD_S
from trainer.toy.determinism import PINNED_CPU_KERNELS, subprocess_env

CHILD = """
import torch
print("capability", torch.backends.cpu.get_cpu_capability(), flush=True)
a = torch.ones(64, 64)
(a @ a).sum().item()
"""


def cpu_has_avx2() -> bool:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        return any(line.startswith("flags") and " avx2" in line for line in f)


def test_the_loop_pins_the_kernels_and_one_thread() -> None:
    env = subprocess_env(1)
    for name, value in PINNED_CPU_KERNELS.items():
        assert env[name] == value
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    # a caller's extra variables still win (the loop passes the service URL and key this way)
    assert subprocess_env(1, {"MKL_CBWR": "AUTO"})["MKL_CBWR"] == "AUTO"


def test_a_toy_process_runs_on_the_pinned_kernels() -> None:
    env = {**subprocess_env(1), "MKL_VERBOSE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True, timeout=HANG_GUARD_S
    ).stdout
    gemm = [line for line in out.splitlines() if "SGEMM" in line]
    assert gemm and all("CNR:COMPATIBLE" in line for line in gemm), out
    if cpu_has_avx2():  # every x86-64 server CPU of the last decade; an older one runs the DEFAULT build
        assert "capability AVX2" in out, out
