#!/usr/bin/env bash
# Every 8B recipe stage through the real CLI on one GPU (issue 13 B; docs/performance.md "Every 8B stage").
#
# A random-weight checkpoint of DeepSeek-R1-Distill-Llama-8B's shape (Llama-3-8B) with an R1-like
# tokenizer (bench/gpu_prepare.py) is built once; regime-w-serve runs on the same GPU with the `hf`
# backend over that checkpoint (arms capped at $MAX_TOKENS tokens); then each stage runs as
#   regime-w-train <stage> --config recipes/deepseek-r1-distill-llama-8b/<stage>.yaml <overrides>
# through bench/stage_probe.py (the same CLI entry point, plus timers and a GPU-memory poller).
# The overrides only shorten the run (rows, steps, completion length $MAX_TOKENS) and point at the
# local checkpoint and data; every memory-relevant setting (quantization, batch sizes, gradient
# accumulation, checkpointing, max_length, optimizer, Liger, LoRA) stays the recipe's.
#
# Prepare here (any machine): python3 bench/gpu_prepare.py --out .gpu --gsm8k-dir DIR  (tokenizer + data)
# and the wheels in .whl/ (docs/performance.md). On the GPU machine, from the repository root:
#   bash bench/gpu_stages.sh                    # all stages
#   bash bench/gpu_stages.sh sft rollouts       # some stages (state under $WORK is reused; missing
#                                               # inputs of a stage are made by running its predecessor)
# Rollout variants (issue 26; each writes its own rollouts file and metrics/<name>.json + <name>_run.json):
#   rollouts         the recipe: scoring overlapped with generation, arms asked for ahead (live arms when
#                    the service's cache is cold, as on a fresh machine)
#   rollouts_cached  the same questions again: every arm already in the service's cache (precomputed arms)
#   rollouts_seq     scoring_in_flight 0, precompute_arms_ahead 0: the pre-issue-26 loop (score, then generate)
#   service_reset    stop the service, delete its arm cache, start it again (cold arms for the next stage)
# EVAL_REUSE_SFT=1: eval's rl-dpo / rl-grpo models are the SFT adapter when those stages did not run (same
# LoRA shape, so the same cost; accuracy columns then mean nothing).
# Results: $WORK/metrics/<stage>.json, $WORK/metrics/stages.json; copied to $OUT when set.
set -uo pipefail
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
REPO=$(pwd)
WORK=${WORK:-/tmp/rw-stages}
SITE=${SITE:-/tmp/site}
PRESET=${PRESET:-llama3-8b}
MODEL=${MODEL:-$WORK/llama8b-r1-$PRESET}
PREP=${PREP:-$REPO/.gpu}
MAX_TOKENS=${MAX_TOKENS:-256}
PORT=${PORT:-8765}
RECIPES=$REPO/recipes/deepseek-r1-distill-llama-8b
SFT_STEPS=${SFT_STEPS:-4}
DPO_STEPS=${DPO_STEPS:-3}
GRPO_STEPS=${GRPO_STEPS:-3}
ROLLOUT_QUESTIONS=${ROLLOUT_QUESTIONS:-16}
EVAL_SAMPLES=${EVAL_SAMPLES:-16}
M=$WORK/metrics
mkdir -p "$WORK" "$M"

if [ ! -f "$SITE/.installed" ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    && touch "$SITE/.installed"
fi
export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export REGIME_W_URL=http://127.0.0.1:$PORT

collect() {
  python3 "$REPO/bench/gpu_stages.py" summarize --dir "$M" --out "$M/stages.json" || true
  if [ -n "${OUT:-}" ]; then  # one archive: the device tool brings back at most 8 files
    (cd "$WORK" && tar czf "$OUT/stages_${LABEL:-run}.tgz" metrics $(ls ./*.log 2>/dev/null)) || true
  fi
}
trap collect EXIT

versions() {
  [ -f "$M/versions.json" ] && return 0
  python3 - "$M/versions.json" <<'EOF'
import importlib.metadata as md, json, sys, torch
v = {"python": sys.version.split()[0], "torch": torch.__version__,
     "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none"}
for n in ("transformers", "trl", "peft", "bitsandbytes", "liger-kernel", "accelerate", "datasets", "fastapi", "pydantic"):
    try:
        v[n] = md.version(n)
    except md.PackageNotFoundError:
        v[n] = None
json.dump(v, open(sys.argv[1], "w"), indent=1)
print(v)
EOF
}

build() {
  [ -f "$MODEL/config.json" ] && return 0
  local t0=$SECONDS
  python3 "$REPO/bench/gpu_stages.py" build --tokenizer "$PREP/tokenizer-r1" --out "$MODEL" --preset "$PRESET" \
    && echo "{\"build_s\": $((SECONDS - t0)), \"preset\": \"$PRESET\"}" >"$M/build.json"
}

service_up() { python3 -c "import httpx,sys; sys.exit(0 if httpx.get('$REGIME_W_URL/readyz', timeout=2).status_code == 200 else 1)" 2>/dev/null; }

service() {
  service_up && return 0
  python3 "$REPO/bench/gpu_stages.py" arms-config --max-tokens "$MAX_TOKENS" --out "$WORK/arms.toml" >/dev/null
  local t0=$SECONDS
  # setsid: on a machine kept warm between calls the service outlives this command
  setsid python3 -c 'import sys; from reward_service.cli import serve_main; sys.exit(serve_main())' \
    --backend hf --model "$MODEL" --device "${SERVICE_DEVICE:-cuda}" --dtype bfloat16 --config "$WORK/arms.toml" \
    --cache-path "$WORK/arms.sqlite3" --arm-batch-questions 64 --generation-batch-rows 64 --insecure-no-auth \
    --port "$PORT" \
    --log-level warning >"$WORK/service.log" 2>&1 < /dev/null &
  echo $! >"$WORK/service.pid"
  for _ in $(seq 1 300); do service_up && break; sleep 1; done
  service_up || { echo "service did not come up"; tail -30 "$WORK/service.log"; return 1; }
  echo "{\"start_s\": $((SECONDS - t0)), \"pid\": $(cat "$WORK/service.pid")}" >"$M/service.json"
}

service_memory() {
  python3 - "$(cat "$WORK/service.pid" 2>/dev/null || echo 0)" "$M/service.json" <<'EOF' || true
import json, sys, pathlib
pid, path = int(sys.argv[1]), pathlib.Path(sys.argv[2])
data = json.loads(path.read_text()) if path.exists() else {}
try:
    import pynvml
    pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0)
    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
        if p.pid == pid:
            data["gpu_gb_now"] = p.usedGpuMemory / 1e9
            data["gpu_gb_max_seen"] = max(data.get("gpu_gb_max_seen", 0), data["gpu_gb_now"])
except Exception as exc:
    data["nvml_error"] = str(exc)
path.write_text(json.dumps(data, indent=1))
EOF
}

probe() {  # probe STAGE [args...]: one stage through the real CLI, metrics to $M/NAME.json (NAME: $PROBE_NAME or STAGE)
  local stage=$1; shift
  local name=${PROBE_NAME:-$stage}
  local extra_var="EXTRA_${stage^^}"  # EXTRA_SFT="--optim adamw_torch" etc.: more overrides
  # shellcheck disable=SC2206
  local extra=(${!extra_var:-})
  set -- "$@" "${extra[@]}"
  echo "=== $name: regime-w-train $stage $*"
  local t0=$SECONDS
  (cd "$WORK" && python3 "$REPO/bench/stage_probe.py" --metrics "$M/$name.json" -- "$stage" "$@") \
    >"$WORK/$name.log" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc in $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || tail -25 "$WORK/$name.log"
  service_memory
  # archive after every stage: a call killed at its time limit still brings back the stages it finished
  # (the EXIT trap does not run while bash waits on a foreground child that outlives the limit)
  collect >/dev/null 2>&1
  return $rc
}

DATA="--dataset $PREP/data/train.jsonl --test_dataset $PREP/data/test.jsonl --split_file $WORK/data/gsm8k_split.json"

run_sft() {
  probe sft --config "$RECIPES/sft.yaml" --model_name_or_path "$MODEL" $DATA \
    --max_steps "$SFT_STEPS" --logging_steps 1 --output_dir "$WORK/checkpoints/lora_sft"
}
need_sft() { [ -f "$WORK/checkpoints/lora_sft/adapter_config.json" ] || run_sft; }

rollouts_as() {  # rollouts_as NAME FILE [overrides...]
  local name=$1 file=$2; shift 2
  need_sft; service || return 1
  rm -f "$file" "${file%.jsonl}.run.json"
  PROBE_NAME=$name probe rollouts --config "$RECIPES/rollouts.yaml" --model_name_or_path "$MODEL" $DATA \
    --adapter_path "$WORK/checkpoints/lora_sft" --max_train_samples "$ROLLOUT_QUESTIONS" \
    --max_new_tokens "$MAX_TOKENS" --rollouts_file "$file" --progress false "$@"
  local rc=$?
  cp "${file%.jsonl}.run.json" "$M/${name}_run.json" 2>/dev/null
  collect >/dev/null 2>&1
  return $rc
}
run_rollouts() { rollouts_as rollouts "$WORK/data/rl_rollouts.jsonl"; }
run_rollouts_cached() { rollouts_as rollouts_cached "$WORK/data/rl_rollouts_cached.jsonl"; }
run_rollouts_seq() {
  rollouts_as rollouts_seq "$WORK/data/rl_rollouts_seq.jsonl" --scoring_in_flight 0 --precompute_arms_ahead 0
}

service_reset() {
  local pid; pid=$(cat "$WORK/service.pid" 2>/dev/null)
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done; fi
  rm -f "$WORK"/arms.sqlite3*
  service
}

run_prefs() {
  [ -s "$WORK/data/rl_rollouts.jsonl" ] || run_rollouts
  probe prefs --config "$RECIPES/prefs.yaml" --rollouts_file "$WORK/data/rl_rollouts.jsonl" \
    --preferences_file "$WORK/data/preferences.jsonl"
  local n; n=$(wc -l <"$WORK/data/preferences.jsonl" 2>/dev/null || echo 0)
  if [ "$n" -lt 16 ]; then
    # Random weights: the service's rewards of the 8 samples of a question can all tie, and prefs
    # rightly skips ties. DPO's cost does not depend on which sample is "better", so for the DPO
    # measurement only, pairs are taken as (sample 0, sample 1) of each question (recorded).
    python3 - "$WORK/data/rl_rollouts.jsonl" "$WORK/data/preferences.jsonl" "$M/prefs_fallback.json" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
with open(sys.argv[2], "w") as f:
    for r in rows:
        t = r["trajectories"]
        f.write(json.dumps({"id": r["id"], "question": r["question"], "better": t[0]["output"],
                            "worse": t[1]["output"], "better_reward": t[0]["reward"],
                            "worse_reward": t[1]["reward"], "margin": 0.0}) + "\n")
json.dump({"pairs_from_prefs": "fewer than 16", "pairs_written": len(rows),
           "rule": "sample 0 vs sample 1 of each question (benchmark only)"}, open(sys.argv[3], "w"))
EOF
  fi
}

run_dpo() {
  need_sft
  [ -s "$WORK/data/preferences.jsonl" ] || run_prefs
  probe dpo --config "$RECIPES/dpo.yaml" --model_name_or_path "$MODEL" \
    --adapter_path "$WORK/checkpoints/lora_sft" --preferences_file "$WORK/data/preferences.jsonl" \
    --max_steps "$DPO_STEPS" --logging_steps 1 --output_dir "$WORK/checkpoints/lora_rl"
}

run_grpo() {
  need_sft; service || return 1
  probe grpo --config "$RECIPES/grpo.yaml" --model_name_or_path "$MODEL" $DATA \
    --adapter_path "$WORK/checkpoints/lora_sft" --max_completion_length "$MAX_TOKENS" \
    --max_steps "$GRPO_STEPS" --logging_steps 1 --output_dir "$WORK/checkpoints/lora_grpo"
}

run_eval() {
  need_sft
  local models="base sft=$WORK/checkpoints/lora_sft"
  local dpo=$WORK/checkpoints/lora_rl grpo=$WORK/checkpoints/lora_grpo
  if [ "${EVAL_REUSE_SFT:-0}" = 1 ]; then  # timing only: same LoRA shape as the RL adapters
    [ -f "$dpo/adapter_config.json" ] || dpo=$WORK/checkpoints/lora_sft
    [ -f "$grpo/adapter_config.json" ] || grpo=$WORK/checkpoints/lora_sft
  fi
  [ -f "$dpo/adapter_config.json" ] && models="$models rl-dpo=$dpo"
  [ -f "$grpo/adapter_config.json" ] && models="$models rl-grpo=$grpo"
  # shellcheck disable=SC2086
  probe eval --config "$RECIPES/eval.yaml" --model_name_or_path "$MODEL" $DATA \
    --platinum "$PREP/data/platinum.jsonl" --max_eval_samples "$EVAL_SAMPLES" --max_new_tokens "$MAX_TOKENS" \
    --eval_models $models --eval_output_dir "$WORK/results/eval" --progress false
}

run_export() {
  local adapter=$WORK/checkpoints/lora_rl
  [ -f "$adapter/adapter_config.json" ] || adapter=$WORK/checkpoints/lora_sft
  [ -f "$adapter/adapter_config.json" ] || { need_sft; adapter=$WORK/checkpoints/lora_sft; }
  probe export --config "$RECIPES/export.yaml" --model_name_or_path "$MODEL" --adapter_path "$adapter" \
    --output_dir "$WORK/checkpoints/merged" --overwrite_output_dir true
  rm -rf "$WORK/checkpoints/merged"  # 16 GB; the disk is needed for the next stages
}

versions
build || exit 1
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(sft rollouts prefs dpo grpo eval export)
for s in "${stages[@]}"; do
  case "$s" in
    sft|rollouts|rollouts_cached|rollouts_seq|prefs|dpo|grpo|eval|export) "run_$s" || echo "stage $s failed" ;;
    service) service ;;
    service_reset) service_reset ;;
    *) echo "unknown stage $s" ;;
  esac
done
