"""Run one ``regime-w-train`` stage through its real CLI entry point and record what it cost.

    python3 bench/stage_probe.py --metrics sft.json -- sft --config recipes/.../sft.yaml --max_steps 4

The stage runs in this process through ``trainer.cli.main`` (what the ``regime-w-train`` console
script calls). Around it, measuring hooks only (nothing in the stage changes):

* GPU memory: this process's peak device memory as the driver reports it (NVML, polled every
  0.1 s; CUDA context included, what ``nvidia-smi`` shows), plus PyTorch's own
  ``max_memory_allocated`` / ``max_memory_reserved``;
* training stages (every ``transformers.Trainer``): the time of each optimizer step (CUDA
  synchronized at step begin and end) and every logged dict (TRL's ``num_tokens``,
  ``completions/mean_length``, ``step_time``, ...);
* generation (``trainer.generation.generate_texts``, used by rollouts and eval): seconds, rows and
  generated tokens of each call;
* scoring (``RewardClient.score``): seconds of each call to the reward service.

The metrics JSON is written even when the stage fails (with its exit code and the error).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


class MemoryPoller:
    """Peak device memory of this process (NVML) and of the whole device, polled in a thread."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.peak_process_bytes = 0
        self.peak_device_bytes = 0
        self.device_bytes_at_start: int | None = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> MemoryPoller:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            index = int((os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0])
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:  # no NVML (CPU machine): record why, measure nothing
            self.error = f"NVML unavailable: {exc}"
            return
        pid = os.getpid()
        while not self._stop.is_set():
            try:
                used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
                if self.device_bytes_at_start is None:
                    self.device_bytes_at_start = used
                self.peak_device_bytes = max(self.peak_device_bytes, used)
                for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid == pid and proc.usedGpuMemory:
                        self.peak_process_bytes = max(self.peak_process_bytes, proc.usedGpuMemory)
            except Exception as exc:
                self.error = f"NVML poll failed: {exc}"
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def install_hooks(record: dict[str, Any]) -> None:
    """Wrap Trainer construction, ``generate_texts`` and ``RewardClient.score`` with timers."""
    import transformers
    from transformers import TrainerCallback

    steps: list[float] = record.setdefault("step_s", [])
    record.setdefault("logs", [])

    class _Timing(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self._t0 = 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            _sync()
            record["train_begin"] = time.perf_counter()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            _sync()
            self._t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            _sync()
            steps.append(time.perf_counter() - self._t0)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs:
                record["logs"].append({k: v for k, v in logs.items() if isinstance(v, (int, float, str))})

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            _sync()
            record["train_end"] = time.perf_counter()

    original_init = transformers.Trainer.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.add_callback(_Timing())
        record["trainer_class"] = type(self).__name__

    transformers.Trainer.__init__ = init  # type: ignore[method-assign]

    import trainer.generation as generation

    calls: list[dict[str, Any]] = record.setdefault("generate_calls", [])
    original_generate = generation.generate_texts

    def generate_texts(model: Any, tokenizer: Any, prompts: Any, specs: Any = None, **kwargs: Any) -> Any:
        _sync()
        t0 = time.perf_counter()
        out = original_generate(model, tokenizer, prompts, specs, **kwargs)
        _sync()
        calls.append(
            {
                "seconds": time.perf_counter() - t0,
                "rows": len(out),
                "tokens": sum(g.num_tokens for g in out),
                "finished": sum(g.finished for g in out),
                "batch_size": kwargs.get("batch_size"),
                "max_new_tokens": kwargs.get("max_new_tokens"),
            }
        )
        return out

    generation.generate_texts = generate_texts  # type: ignore[assignment]

    import trainer.reward_client as reward_client

    scores: list[float] = record.setdefault("score_calls_s", [])
    original_score = reward_client.RewardClient.score

    def score(self: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original_score(self, *args, **kwargs)
        finally:
            scores.append(time.perf_counter() - t0)

    reward_client.RewardClient.score = score  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("usage: stage_probe.py --metrics FILE -- STAGE [regime-w-train args]", file=sys.stderr)
        return 2
    cut = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv[:cut])
    stage_argv = argv[cut + 1 :]
    record: dict[str, Any] = {"argv": ["regime-w-train", *stage_argv], "stage": stage_argv[0] if stage_argv else None}
    poller = MemoryPoller().start()
    t0 = time.perf_counter()
    rc = 1
    try:
        install_hooks(record)
        from trainer.cli import main as cli_main

        rc = cli_main(stage_argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()[-4000:]
        traceback.print_exc()
        rc = 1
    finally:
        record["wall_s"] = time.perf_counter() - t0
        poller.stop()
        record["rc"] = rc
        record["peak_process_gb"] = poller.peak_process_bytes / 1e9
        record["peak_device_gb"] = poller.peak_device_bytes / 1e9
        record["device_gb_at_start"] = (poller.device_bytes_at_start or 0) / 1e9
        record["nvml_error"] = poller.error
        try:
            import torch

            if torch.cuda.is_available():
                record["torch_max_allocated_gb"] = torch.cuda.max_memory_allocated() / 1e9
                record["torch_max_reserved_gb"] = torch.cuda.max_memory_reserved() / 1e9
        except Exception as exc:  # measuring must not hide the stage's own result
            record["torch_memory_error"] = str(exc)
        for key in ("train_begin", "train_end"):
            if key in record:
                record[key] -= t0  # seconds since the stage started
        args.metrics.parent.mkdir(parents=True, exist_ok=True)
        args.metrics.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
