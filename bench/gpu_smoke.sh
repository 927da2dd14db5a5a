#!/usr/bin/env bash
# GPU smoke check: the GPU paths of docs/distributed.md (one GPU, DDP, DeepSpeed ZeRO-2/3, FSDP), each run for a few
# steps on real GPUs. Run it by hand on a GPU machine; `make test` and CI never run it.
#
# What it checks. Every stage is the documented command on the default configs with a small budget; it passes when
# the command exits 0 and its output is there (SFT: merged/ and detoxrl.json; PPO: those, checkpoint-4/ and a card
# that records 5 steps; best-of-4: 50 rewrites):
#
#   judge        the reward's toxicity classifier (detoxrl-toxicity-minilm), trained with `detoxrl train-toxicity`
#                only when the detoxrl cache lacks it (PPO and best-of-n reranking load it)
#   1 GPU, configs/accelerate/single_gpu.yaml:
#     sft-1gpu   QLoRA SFT, 20 steps of 16 (sft/train.py --finetuning qlora)
#     ppo-1gpu   PPO from sft-1gpu, 5 steps of 64 rollouts (2 critic-warmup steps), a checkpoint at step 4
#     bo4-1gpu   best-of-4 rewrites of 50 dev sentences with ppo-1gpu (detoxrl rewrite --best_of 4 --device cuda)
#   2+ GPUs, 2 processes (GPU_SMOKE_PROCS=N for more):
#     sft-ddp,   ppo-ddp     configs/accelerate/multi_gpu.yaml: QLoRA SFT (a 4-bit copy per GPU), PPO from it
#     sft-zero2, ppo-zero2   configs/accelerate/deepspeed_zero2.yaml: LoRA SFT (DeepSpeed takes no 4-bit base),
#                            PPO from it
#     ppo-zero3              configs/accelerate/deepspeed_zero3.yaml: PPO from sft-1gpu
#     ppo-fsdp               configs/accelerate/fsdp.yaml: PPO from sft-1gpu
# A stage whose input stage failed is skipped; the others still run.
#
# Printed per stage, and as a markdown table at the end (stage, status, s/step, peak MiB):
#   s/step    SFT: the median wall time between consecutive logged steps (its tensorboard events; model loading,
#             the first step, the evaluation and saving are outside it). PPO: the median of the time/step_s it
#             logs, over the steps after the critic warm-up. best-of-4: seconds per sentence (generation and
#             reranking, as `detoxrl rewrite` logs them).
#   peak MiB  the largest memory.used of any one GPU during the stage (nvidia-smi sampled every 0.5 s; it counts
#             other processes on the GPU too: the memory in use before the first stage is printed).
#
# How long: aimed at under 10 minutes on one H100 for the 1-GPU stages (about 5 expected), plus about 10 more for
# the 2-GPU stages, plus the classifier the first time (`detoxrl train-toxicity`, 531 steps of 32 on MiniLM).
# Estimates only: the script has not run on a GPU yet.
#
# How to run, from anywhere, in the project's environment (`make install` after your CUDA build of torch;
# docs/distributed.md), with the data folder where the other commands find it (../shared/data or DETOXRL_DATA_DIR):
#
#   bash bench/gpu_smoke.sh                          # every stage this machine's GPU count allows
#   GPU_SMOKE_DRY_RUN=1 bash bench/gpu_smoke.sh      # print every command (all stages) and run none
#   GPU_SMOKE_OUT=/scratch/smoke GPU_SMOKE_PROCS=4 bash bench/gpu_smoke.sh
#
# Settings (environment): GPU_SMOKE_OUT (an empty or new folder, relative to where you are; default
# outputs/gpu_smoke/<date-time> in the repository), GPU_SMOKE_PROCS (processes of the multi-GPU stages, >= 2,
# default 2), GPU_SMOKE_DRY_RUN=1, PYTHON (default python), ACCELERATE (default accelerate), DETOXRL (default
# detoxrl). Each stage's output goes to $OUT/<stage>, its log to $OUT/logs/<stage>.log (the last lines are printed
# when it fails). Every SFT and PPO stage saves a merged 135M model and a checkpoint: leave a few GB of disk.
#
# Exit codes: 0 every stage run passed; 1 a stage failed (a line "gpu_smoke: FAILED stage <name>" for each);
# 2 nothing was run: no CUDA GPU here (nvidia-smi missing, or torch.cuda.is_available() false; the stages and the
# GPUs each needs are printed), or a set-up problem (accelerate/detoxrl not found, output folder not empty,
# GPU_SMOKE_PROCS below 2 or above the GPU count).
#
# The result belongs in docs/distributed.md's table (the summary table is printed in markdown for that).

set -euo pipefail

CALLER=$PWD
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PY=${PYTHON:-python}
ACC=${ACCELERATE:-accelerate}
CLI=${DETOXRL:-detoxrl}
DRY=${GPU_SMOKE_DRY_RUN:-0}
PROCS=${GPU_SMOKE_PROCS:-2}
OUT=${GPU_SMOKE_OUT:-outputs/gpu_smoke/$(date +%Y%m%d-%H%M%S)}  # the default under the repository root
[[ -z ${GPU_SMOKE_OUT:-} || $OUT == /* ]] || OUT=$CALLER/$OUT        # a given relative path: from where you are
ACC_DIR=configs/accelerate
SFT_STEPS=20
PPO_STEPS=5
PPO_WARMUP=2        # critic_warmup_steps (the default): actor frozen, left out of PPO's s/step
PPO_SAVE=4          # a checkpoint at this step (saving is collective; a run's final save is not a checkpoint)
BEST_OF=4
DEV_SENTENCES=50

STAGES=(judge sft-1gpu ppo-1gpu bo4-1gpu sft-ddp ppo-ddp sft-zero2 ppo-zero2 ppo-zero3 ppo-fsdp)
declare -A NEED=([judge]=1 [sft-1gpu]=1 [ppo-1gpu]=1 [bo4-1gpu]=1 [sft-ddp]=2 [ppo-ddp]=2 [sft-zero2]=2
                 [ppo-zero2]=2 [ppo-zero3]=2 [ppo-fsdp]=2)
declare -A AFTER=([ppo-1gpu]=sft-1gpu [bo4-1gpu]=ppo-1gpu [ppo-ddp]=sft-ddp [ppo-zero2]=sft-zero2
                  [ppo-zero3]=sft-1gpu [ppo-fsdp]=sft-1gpu)
declare -A WHAT=(
  [judge]="the reward's toxicity classifier, trained when the detoxrl cache lacks it"
  [sft-1gpu]="QLoRA SFT, $SFT_STEPS steps, single_gpu.yaml"
  [ppo-1gpu]="PPO from sft-1gpu, $PPO_STEPS steps, single_gpu.yaml"
  [bo4-1gpu]="best-of-$BEST_OF on $DEV_SENTENCES dev sentences with ppo-1gpu"
  [sft-ddp]="QLoRA SFT, $SFT_STEPS steps, multi_gpu.yaml (DDP)"
  [ppo-ddp]="PPO from sft-ddp, $PPO_STEPS steps, multi_gpu.yaml (DDP)"
  [sft-zero2]="LoRA SFT, $SFT_STEPS steps, deepspeed_zero2.yaml"
  [ppo-zero2]="PPO from sft-zero2, $PPO_STEPS steps, deepspeed_zero2.yaml"
  [ppo-zero3]="PPO from sft-1gpu, $PPO_STEPS steps, deepspeed_zero3.yaml"
  [ppo-fsdp]="PPO from sft-1gpu, $PPO_STEPS steps, fsdp.yaml")
declare -A STATUS=() SPS=() PEAK=()
FAILED=()
SAMPLER=

say() { printf 'gpu_smoke: %s\n' "$*"; }

if ! [[ $PROCS =~ ^[0-9]+$ ]] || (( PROCS < 2 )); then
  say "GPU_SMOKE_PROCS must be a whole number >= 2 (got '$PROCS')"
  exit 2
fi

# ------------------------------------------------------------------------------------------- no GPU: stop here
NGPU=0
WHY=
if [[ $DRY == 1 ]]; then
  NGPU=$PROCS  # show every stage
elif ! command -v nvidia-smi >/dev/null 2>&1; then
  WHY="nvidia-smi not found"
elif ! NGPU=$("$PY" -c 'import torch; assert torch.cuda.is_available(); print(torch.cuda.device_count())' \
              2>/dev/null); then
  NGPU=0
  WHY="torch.cuda.is_available() is false (or torch is missing) for $PY"
fi
if (( NGPU == 0 )); then
  say "no CUDA GPU here ($WHY): nothing was run. Every stage needs a GPU:"
  for s in "${STAGES[@]}"; do
    printf '  %-10s %d GPU%s  %s\n' "$s" "${NEED[$s]}" "$([[ ${NEED[$s]} == 1 ]] && echo ' ' || echo s)" "${WHAT[$s]}"
  done
  say "run it on a machine with an NVIDIA GPU (2+ for the DDP, DeepSpeed and FSDP stages);" \
      "GPU_SMOKE_DRY_RUN=1 prints the commands"
  exit 2
fi
if (( NGPU > 1 && PROCS > NGPU )); then
  say "GPU_SMOKE_PROCS=$PROCS but this machine has $NGPU GPUs; set GPU_SMOKE_PROCS <= $NGPU"
  exit 2
fi

# ------------------------------------------------------------------------------------------- helpers
quote() {  # the arguments as one shell line, quoted only where needed
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
      out+=("$a")
    elif [[ $a != *"'"* ]]; then
      out+=("'$a'")
    else
      out+=("$(printf '%q' "$a")")
    fi
  done
  printf '%s' "${out[*]}"
}

run() {  # one command of the current stage: printed (dry run) or run with its output appended to the stage's log
  if [[ $DRY == 1 ]]; then
    printf '    %s\n' "$(quote "$@")"
    return 0
  fi
  printf '+ %s\n' "$(quote "$@")" >> "$LOG"
  "$@" >> "$LOG" 2>&1
}

fail() {  # a check of the current stage failed: say why, in the log and here
  printf 'check failed: %s\n' "$*" >> "$LOG"
  say "$*"
  return 1
}

need_file() {
  if [[ -f $1 ]]; then return 0; fi
  if [[ $DRY == 1 ]]; then
    printf '    (%s is not in this checkout yet)\n' "$1"
    return 0
  fi
  fail "$1 not found"
}

need_deepspeed() {
  [[ $DRY == 1 ]] || "$PY" -c 'import deepspeed' >/dev/null 2>&1 || fail "deepspeed is not installed: pip install deepspeed"
}

launch() {  # [VAR=value] config script args: accelerate launch with a config of configs/accelerate ($PROCS
            # processes for the multi-GPU ones)
  local cmd=()
  if [[ $1 == *=* ]]; then
    cmd=(env "$1")
    shift
  fi
  cmd+=("$ACC" launch --config_file "$ACC_DIR/$1")
  [[ $1 == single_gpu.yaml ]] || cmd+=(--num_processes "$PROCS")
  shift
  run "${cmd[@]}" "$@"
}

sft() {  # stage accelerate-config finetuning
  local dir=$OUT/$1
  need_file "$ACC_DIR/$2" || return
  # the SFT trainer's tensorboard events go to ./runs/ unless TENSORBOARD_LOGGING_DIR says where
  launch "TENSORBOARD_LOGGING_DIR=$dir/runs" "$2" sft/train.py --finetuning "$3" --max_steps "$SFT_STEPS" \
    --logging_steps 1 --report_to tensorboard --output_dir "$dir" || return
  [[ $DRY == 1 ]] && return
  [[ -d $dir/merged && -f $dir/detoxrl.json ]] || fail "$dir has no merged/ or detoxrl.json"
}

ppo() {  # stage accelerate-config start-stage
  local dir=$OUT/$1
  need_file "$ACC_DIR/$2" || return
  launch "$2" rl/ppo.py --model_name_or_path "$OUT/$3" --max_steps "$PPO_STEPS" \
    --critic_warmup_steps "$PPO_WARMUP" --save_steps "$PPO_SAVE" --report_to tensorboard --output_dir "$dir" || return
  [[ $DRY == 1 ]] && return
  [[ -d $dir/merged && -f $dir/detoxrl.json ]] || fail "$dir has no merged/ or detoxrl.json" || return
  [[ -d $dir/checkpoint-$PPO_SAVE ]] || fail "$dir has no checkpoint-$PPO_SAVE" || return
  local steps
  steps=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["metrics"]["steps"])' "$dir/detoxrl.json")
  [[ $steps == "$PPO_STEPS" ]] || fail "$dir/detoxrl.json records $steps steps, not $PPO_STEPS"
}

stage_judge() {
  if [[ $DRY != 1 ]] && "$PY" -c 'import sys
from rewards.toxicity.default import default_classifier_dir, is_trained
sys.exit(0 if is_trained(default_classifier_dir()) else 1)' 2>>"$LOG"; then
    echo "detoxrl-toxicity-minilm is in the detoxrl cache: nothing to train" >> "$LOG"
    STATUS[judge]=present
    return
  fi
  [[ $DRY == 1 ]] && echo "    (only when the detoxrl cache lacks detoxrl-toxicity-minilm)"
  run "$CLI" train-toxicity --config configs/rewards/train_toxicity.yaml
}
stage_sft-1gpu() { sft sft-1gpu single_gpu.yaml qlora; }
stage_ppo-1gpu() { ppo ppo-1gpu single_gpu.yaml sft-1gpu; }
stage_bo4-1gpu() {
  run "$CLI" data export --split dev --output "$OUT/dev.jsonl" || return
  # the first DEV_SENTENCES distinct sources, one a line
  run "$PY" -c 'import json, sys; src = dict.fromkeys(" ".join(json.loads(l)["inputs"].split()) for l in open(sys.argv[1], encoding="utf-8")); src.pop("", None); open(sys.argv[2], "w", encoding="utf-8").writelines(s + "\n" for s in list(src)[: int(sys.argv[3])])' \
    "$OUT/dev.jsonl" "$OUT/dev$DEV_SENTENCES.txt" "$DEV_SENTENCES" || return
  run "$CLI" rewrite --model "$OUT/ppo-1gpu" --best_of "$BEST_OF" --temperature 0.7 --device cuda \
    --input "$OUT/dev$DEV_SENTENCES.txt" --output "$OUT/bo4-1gpu.txt" || return
  [[ $DRY == 1 ]] && return
  local n
  n=$(grep -c . "$OUT/bo4-1gpu.txt" || true)
  (( n == DEV_SENTENCES )) || fail "$OUT/bo4-1gpu.txt holds $n non-empty rewrites, not $DEV_SENTENCES"
}
stage_sft-ddp() { sft sft-ddp multi_gpu.yaml qlora; }
stage_ppo-ddp() { ppo ppo-ddp multi_gpu.yaml sft-ddp; }
stage_sft-zero2() { need_deepspeed || return; sft sft-zero2 deepspeed_zero2.yaml lora; }
stage_ppo-zero2() { need_deepspeed || return; ppo ppo-zero2 deepspeed_zero2.yaml sft-zero2; }
stage_ppo-zero3() { need_deepspeed || return; ppo ppo-zero3 deepspeed_zero3.yaml sft-1gpu; }
stage_ppo-fsdp() { ppo ppo-fsdp fsdp.yaml sft-1gpu; }

seconds_per_step() {  # stage: SFT/PPO from the run's tensorboard events, best-of-n from its log
  local name=$1
  case $name in
    judge) echo - ;;
    bo4-*)
      sed -n 's/.*best of [0-9]* for [0-9]* lines: generation \([0-9.]*\) s, reranking \([0-9.]*\) s.*/\1 \2/p' \
        "$OUT/logs/$name.log" | awk -v n="$DEV_SENTENCES" 'NR == 1 {printf "%.3f/sent\n", ($1 + $2) / n; f = 1}
                                                          END {if (!f) print "?"}' ;;
    *)
      "$PY" - "$OUT/$name" "$([[ $name == ppo-* ]] && echo time/step_s || echo train/loss)" "$PPO_WARMUP" \
        2>>"$OUT/logs/$name.log" <<'PYTHON' || echo "?"
import glob, os, statistics, sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

run, tag, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3])
events = {}
for path in glob.glob(os.path.join(run, "**", "events.out.tfevents*"), recursive=True):
    acc = EventAccumulator(path, size_guidance={"scalars": 0})
    acc.Reload()
    if tag in acc.Tags()["scalars"]:
        events.update({e.step: e for e in acc.Scalars(tag)})
if tag == "time/step_s":  # PPO logs each step's seconds; the critic warm-up steps do not update the actor
    per_step = [events[s].value for s in sorted(events) if s > warmup]
else:  # SFT: wall time between consecutive logged steps
    steps = sorted(events)
    per_step = [(events[b].wall_time - events[a].wall_time) / (b - a) for a, b in zip(steps, steps[1:])]
print(f"{statistics.median(per_step):.3f}" if per_step else "?")
PYTHON
      ;;
  esac
}

start_sampler() {
  nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 500 > "$1" 2>/dev/null &
  SAMPLER=$!
}

stop_sampler() {
  if [[ -n $SAMPLER ]]; then
    kill "$SAMPLER" 2>/dev/null || true
    wait "$SAMPLER" 2>/dev/null || true
    SAMPLER=
  fi
}
trap stop_sampler EXIT

stage() {
  local name=$1 dep=${AFTER[$1]:-} need=${NEED[$1]} t0 rc=0
  if (( NGPU < need )); then
    STATUS[$name]="skipped (needs ${NEED[$name]} GPUs)"
    return
  fi
  if [[ -n $dep && $DRY != 1 && ${STATUS[$dep]} != passed ]]; then
    STATUS[$name]="skipped ($dep did not pass)"
    say "[$name] skipped: $dep did not pass"
    return
  fi
  LOG=$OUT/logs/$name.log
  if [[ $DRY == 1 ]]; then
    echo "[$name] ${WHAT[$name]}"
    "stage_$name"
    STATUS[$name]="dry run"
    return
  fi
  say "[$name] ${WHAT[$name]} (log: $LOG)"
  start_sampler "$OUT/logs/$name.mem"
  t0=$SECONDS
  "stage_$name" || rc=$?
  stop_sampler
  PEAK[$name]=$(awk -F', *' '$2 + 0 > m {m = $2 + 0} END {print (NR ? m + 0 : "?")}' "$OUT/logs/$name.mem") \
    || PEAK[$name]="?"
  if (( rc != 0 )); then
    STATUS[$name]=FAILED
    FAILED+=("$name")
    say "FAILED stage $name (exit $rc after $((SECONDS - t0)) s); the last lines of $LOG:"
    tail -n 25 "$LOG" | sed 's/^/    /'
    return
  fi
  [[ ${STATUS[$name]:-} == present ]] || STATUS[$name]=passed
  SPS[$name]=$(seconds_per_step "$name") || SPS[$name]="?"
  say "[$name] ${STATUS[$name]} in $((SECONDS - t0)) s: s/step ${SPS[$name]}, peak ${PEAK[$name]} MiB"
}

# ------------------------------------------------------------------------------------------- run
for tool in "$ACC" "$CLI"; do
  if [[ $DRY != 1 ]] && ! command -v "$tool" >/dev/null 2>&1; then
    say "'$tool' not found: activate the project's environment (make install), or set ACCELERATE / DETOXRL"
    exit 2
  fi
done
if [[ $DRY == 1 ]]; then
  say "dry run: the commands of every stage (as on a machine with $PROCS+ GPUs), none run; output folder $OUT"
else
  if [[ -d $OUT && -n $(ls -A "$OUT") ]]; then
    say "$OUT is not empty: set GPU_SMOKE_OUT to a new folder"
    exit 2
  fi
  mkdir -p "$OUT/logs"
  say "$NGPU GPU(s); output in $OUT; memory in use before any stage (MiB, per GPU):"
  nvidia-smi --query-gpu=index,name,memory.used,memory.total --format=csv,noheader | sed 's/^/    /'
fi

for s in "${STAGES[@]}"; do
  stage "$s"
done

# ------------------------------------------------------------------------------------------- summary
echo
if [[ $DRY != 1 ]]; then
  echo "GPU smoke, $(date +%Y-%m-%d), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'): $NGPU x" \
       "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)$( (( NGPU > 1 )) && echo ", multi-GPU stages" \
       "with $PROCS processes"), $("$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")' \
       2>/dev/null || echo 'torch ?')"
  echo
fi
echo "| stage | status | s/step | peak MiB |"
echo "|---|---|---:|---:|"
for s in "${STAGES[@]}"; do
  echo "| $s | ${STATUS[$s]:-not run} | ${SPS[$s]:--} | ${PEAK[$s]:--} |"
done
echo
if (( ${#FAILED[@]} )); then
  say "${#FAILED[@]} stage(s) failed: ${FAILED[*]} (logs in $OUT/logs)"
  exit 1
fi
if [[ $DRY == 1 ]]; then
  say "dry run: nothing was run"
else
  say "every stage run passed"
fi
