#!/usr/bin/env bash
# The GPU benchmark (docs/performance.md "GPU paths"): the QLoRA step (plain loop vs the trainer's
# SFT path, bench/qlora_step.py) and arm generation (the `hf` backend vs plain generate,
# bench/generate.py) on random weights of the Llama-3-8B shape.
#
# Run from the repository root on a CUDA machine, with the missing wheels in .whl/ (see
# docs/performance.md for which). Phases (each idempotent, so a phase can be re-run on a machine
# that still holds the earlier phases' state under $WORK):
#
#   bash bench/gpu_suite.sh probe      # install wheels, versions, smoke test both scripts, build the 8B checkpoint
#   bash bench/gpu_suite.sh qlora      # the QLoRA suite (resumes; stops starting runs after QLORA_BUDGET_S)
#   bash bench/gpu_suite.sh generate   # bench/generate.py, eager (plain generate baseline) then --compile
#   bash bench/gpu_suite.sh all        # everything, one after the other
#
# Results go to $WORK (default /tmp/regime-w-bench) and are copied to $OUT when it is set.
set -euo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
WORK=${WORK:-/tmp/regime-w-bench}
SITE=${SITE:-/tmp/site}
MODEL=${MODEL:-/tmp/llama8b-random}
QLORA_BUDGET_S=${QLORA_BUDGET_S:-540}
GEN_BATCHES=${GEN_BATCHES:-1,16,64}
GEN_TOKENS=${GEN_TOKENS:-256}
GEN_REPEATS=${GEN_REPEATS:-2}
mkdir -p "$WORK"

install_wheels() {
  if [ ! -f "$SITE/.installed" ]; then
    if ls .whl/*.whl >/dev/null 2>&1; then
      # pydantic is not needed by either benchmark (and its own dependencies are not on the image)
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        $(ls .whl/*.whl | grep -v -e pydantic) && touch "$SITE/.installed"
    fi
  fi
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
}

versions() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv || true
  python3 - <<'EOF'
import importlib.metadata as md, sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "no cuda")
for n in ("transformers", "trl", "peft", "bitsandbytes", "liger-kernel", "accelerate", "datasets", "triton", "flash-attn", "kernels"):
    try:
        print(n, md.version(n))
    except md.PackageNotFoundError:
        print(n, "missing")
EOF
}

collect() {
  [ -n "${OUT:-}" ] || return 0
  for f in "$WORK"/qlora/summary.json "$WORK"/gen_eager.json "$WORK"/gen_compiled.json "$WORK"/gen_eager.stdout \
           "$WORK"/gen_compiled.stdout "$WORK"/probe.json; do
    [ -f "$f" ] && cp "$f" "$OUT/$(basename "$(dirname "$f")" | sed 's/regime-w-bench//')$(basename "$f")" || true
  done
  ls "$OUT"
}

phase_probe() {
  versions
  python3 -c "import bitsandbytes, trl, peft, liger_kernel, datasets; print('imports ok')"
  python3 bench/qlora_step.py build --out /tmp/llama-small --preset small
  python3 bench/qlora_step.py one --path plain --model /tmp/llama-small --batch 2 --seq 256 --warmup 1 --steps 2 \
    --json-out "$WORK/probe_plain.json" | tail -5
  python3 bench/qlora_step.py one --path trainer --model /tmp/llama-small --batch 2 --seq 256 --warmup 1 --steps 2 \
    --liger --padding-free --json-out "$WORK/probe_trainer.json" | tail -5
  python3 bench/generate.py --random-config 1024,2 --device cuda --dtype bfloat16 --batch-sizes 2 \
    --new-tokens 16 --repeats 1 --warmup 1 --compile --out "$WORK/probe_gen.json" | tail -3
  python3 - "$WORK" <<'EOF'
import json, sys, pathlib
w = pathlib.Path(sys.argv[1])
out = {p.stem: json.loads(p.read_text()) for p in sorted(w.glob("probe_*.json"))}
(w / "probe.json").write_text(json.dumps(out, indent=2))
EOF
  phase_build
}

phase_build() {
  local t0=$SECONDS
  python3 bench/qlora_step.py build --out "$MODEL" --preset llama3-8b
  echo "build: $((SECONDS - t0)) s"; du -sh "$MODEL"
}

phase_qlora() {
  phase_build
  python3 bench/qlora_step.py suite --model "$MODEL" --results-dir "$WORK/qlora" --budget-s "$QLORA_BUDGET_S" \
    ${QLORA_ONLY:+--only "$QLORA_ONLY"}
}

phase_generate() {
  local which=${1:-both}
  # rows are printed as each batch size finishes: `tail -f $WORK/gen_*.stdout` to follow
  if [ "$which" != compiled ]; then
    timeout "${GEN_TIMEOUT_S:-1200}" python3 bench/generate.py --random-config llama3-8b --device cuda --dtype bfloat16 \
      --batch-sizes "$GEN_BATCHES" --new-tokens "$GEN_TOKENS" --repeats "$GEN_REPEATS" --warmup 1 \
      --out "$WORK/gen_eager.json" >"$WORK/gen_eager.stdout" || echo "generate (eager) failed or timed out: $?"
  fi
  if [ "$which" != eager ]; then
    timeout "${GEN_TIMEOUT_S:-1200}" python3 bench/generate.py --random-config llama3-8b --device cuda --dtype bfloat16 \
      --batch-sizes "$GEN_BATCHES" --new-tokens "$GEN_TOKENS" --repeats "$GEN_REPEATS" --warmup 1 --compile \
      --out "$WORK/gen_compiled.json" >"$WORK/gen_compiled.stdout" || echo "generate (compiled) failed or timed out: $?"
  fi
}

install_wheels
trap collect EXIT
case "${1:-all}" in
  probe) phase_probe ;;
  build) phase_build ;;
  qlora) phase_qlora ;;
  generate) phase_generate "${2:-both}" ;;
  all) phase_probe; phase_qlora; phase_generate both ;;
  *) echo "usage: $0 probe|build|qlora|generate [eager|compiled]|all" >&2; exit 2 ;;
esac
