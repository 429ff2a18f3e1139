#!/usr/bin/env bash
# Toy "teacher" candidates for the hard toy world (issue 25 item 1): toy bases wider and trained longer than the
# recipe's, on a clean corpus, built on one GPU through the real `regime-w-train toy-base` stage.
#
# On the GPU machine, from the repository root, with the wheels in .whl/ (docs/performance.md):
#   TEACHERS="t192:192:4:4:512:6000:64:1.5e-3" bash bench/gpu_toy_teacher.sh
# Each TEACHERS entry is name:hidden:layers:heads:intermediate:steps:batch:learning_rate; the candidates train
# side by side on the GPU. Every other setting is recipes/toy/toy_base.yaml's, with the hard world's
# `--number_scale 1.0` (docs/reward-ablation-hard.md) and no deliberate noise in the corpus
# (`--noise_wrong_step 0 --noise_other_format 0`), on 100,000 corpus problems instead of 20,000 (the
# generator cuts train, dev, test, then the corpus: a longer corpus leaves the other splits as they are). Each candidate's greedy dev accuracy (the 300 problems of dev.jsonl)
# is in its TOY_BASE.json; the model folders are tarred to $OUT (one file each, under the 16 MiB a file).
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
WORK=${WORK:-/tmp/rw-teacher}
SITE=${SITE:-/tmp/site}
TEACHERS=${TEACHERS:-"t128:128:4:4:384:5000:64:2e-3 t192:192:4:4:512:6000:64:1.5e-3 t256:256:4:4:512:8000:64:1e-3 t96long:96:3:4:256:6000:64:3e-3"}
mkdir -p "$WORK"
if [ ! -f "$SITE/.installed" ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    && touch "$SITE/.installed"
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"
pids=()
for spec in $TEACHERS; do
  IFS=: read -r name hidden layers heads inter steps batch lr <<<"$spec"
  (
    python3 -m trainer.cli toy-base --config recipes/toy/toy_base.yaml \
      --toy_data_dir "$WORK/data-$name" --toy_base_dir "$WORK/$name" --number_scale 1.0 --n_pretrain 100000 \
      --noise_wrong_step 0 --noise_other_format 0 --hidden_size "$hidden" --num_layers "$layers" \
      --num_heads "$heads" --intermediate_size "$inter" --base_max_steps "$steps" --base_batch_size "$batch" \
      --base_learning_rate "$lr" --base_device cuda --eval_samples 300 >"$WORK/$name.log" 2>&1
    echo "$name exit $?"
  ) &
  pids+=($!)
done
wait "${pids[@]}"
for spec in $TEACHERS; do
  name=${spec%%:*}
  tail -3 "$WORK/$name.log"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], {k: d.get(k) for k in ('accuracy','correct','evaluated','train_seconds','parameters')})" \
    "$WORK/$name/TOY_BASE.json" "$name" 2>/dev/null || echo "$name: no TOY_BASE.json"
  if [ -n "${OUT:-}" ] && [ -f "$WORK/$name/TOY_BASE.json" ]; then
    tar -C "$WORK" -czf "$OUT/teacher-$name.tgz" "$name" "$name.log"
  fi
done
