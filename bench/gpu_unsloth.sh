#!/usr/bin/env bash
# Unsloth beside the trainer's QLoRA SFT step on one GPU (issue 15 item 3, issue 26 item 3).
#
# Two --target sites, never mixed: /tmp/site (the trainer's wheels, .whl/: transformers, trl, peft,
# bitsandbytes, liger-kernel, datasets) and /tmp/site-unsloth (.whl-unsloth/: unsloth, unsloth_zoo,
# trl <= 1.15, datasets < 5 and their small needs, plus peft, bitsandbytes, dill, multiprocess and
# pydantic from .whl/; transformers is the GPU image's 5.17, which Unsloth's pin allows).
# One random-weight Llama-3-8B checkpoint (bench/qlora_step.py build), then, each in its own process:
#   ours:    bench/qlora_step.py one --path trainer --batch 8 --liger   (the recipe's SFT path)
#   unsloth: bench/unsloth_step.py one --batch 8 [--gc unsloth|true] [--dropout D]
# Prepare here: the wheels in .whl/ and .whl-unsloth/ (docs/performance.md says which). On the GPU machine,
# from the repository root: bash bench/gpu_unsloth.sh   (results under $OUT when set, else $WORK)
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
REPO=$(pwd)
WORK=${WORK:-/tmp/rw-unsloth}
MODEL=${MODEL:-$WORK/llama8b-random}
RES=${OUT:-$WORK}
BATCH=${BATCH:-8}
UNSLOTH_RUNS=${UNSLOTH_RUNS:-"unsloth:0.05 true:0.05 unsloth:0"}  # gc:dropout, in order, while time lasts
mkdir -p "$WORK"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "install /tmp/site failed"; exit 1; }
shared=$(ls .whl/peft-*.whl .whl/bitsandbytes-*.whl .whl/dill-*.whl .whl/multiprocess-*.whl .whl/pydantic-*.whl \
  .whl/pydantic_core-*.whl .whl/annotated_types-*.whl .whl/typing_inspection-*.whl)
# shellcheck disable=SC2086
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-unsloth \
  .whl-unsloth/*.whl $shared || { echo "install /tmp/site-unsloth failed"; exit 1; }

t0=$SECONDS
PYTHONPATH=/tmp/site:$REPO python3 bench/qlora_step.py build --out "$MODEL" 2>&1 | tail -1
echo "=== build: $((SECONDS - t0)) s"

t0=$SECONDS
PYTHONPATH=/tmp/site:$REPO python3 bench/qlora_step.py one --model "$MODEL" --path trainer --batch "$BATCH" --liger \
  --json-out "$RES/qlora_trainer_liger_b$BATCH.json" >"$WORK/ours.log" 2>&1
echo "=== ours (trainer + Liger, batch $BATCH): rc=$? in $((SECONDS - t0)) s"; tail -3 "$WORK/ours.log"

for run in $UNSLOTH_RUNS; do
  gc=${run%%:*}; dropout=${run##*:}
  t0=$SECONDS
  PYTHONPATH=/tmp/site-unsloth:$REPO python3 bench/unsloth_step.py one --model "$MODEL" --batch "$BATCH" \
    --gc "$gc" --dropout "$dropout" --json-out "$RES/unsloth_gc${gc}_d${dropout}_b$BATCH.json" \
    >"$WORK/unsloth_${gc}_${dropout}.log" 2>&1
  rc=$?
  echo "=== unsloth (gc $gc, dropout $dropout, batch $BATCH): rc=$rc in $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || tail -30 "$WORK/unsloth_${gc}_${dropout}.log"
done
(cd "$WORK" && tar czf "$RES/unsloth_logs.tgz" ./*.log) 2>/dev/null
python3 - "$RES" <<'PY'
import json, pathlib, sys
for p in sorted(pathlib.Path(sys.argv[1]).glob("*_b*.json")):
    r = json.loads(p.read_text())
    print(f"{p.stem}: {r.get('s_per_step')} s/step, {r.get('tokens_per_s')} tokens/s, peak {r.get('peak_gb')} GB, "
          f"load {r.get('load_s')} s, steps {r.get('s_per_step_all')}")
PY
