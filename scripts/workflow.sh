#!/usr/bin/env bash
# The recipe that makes the shipped checkpoint, from nothing, in the embedded simulator (defaults below):
#   1. demonstrations: the scripted expert, written straight from the Gymnasium env (DEMOS=offline, default;
#      two processes) or recorded through topics (DEMOS=topics: expert_node + collector_node, real time)
#   2. vla-train: the native VLA (and, with BASELINE=1, the textbook baseline on the same data), then
#      CONTINUE_EPOCHS more epochs from its checkpoint (a warm restart of the schedule), then one stage per
#      number in EXTRA_EPISODES: that many more demonstrations (the next scene seeds), EXTRA_EPOCHS on all
#   3. DAGGER_ROUNDS rounds of DAgger: the policy drives (DAGGER_MAX_STEPS per episode), the expert labels,
#      fine-tune on everything (off by default: on pick it bought nothing, see the README)
#   4. vla-eval: localization probe, offline error and closed-loop success per family, seen and held-out
#      instructions (EVAL_EPISODES unseen seeds per family and split, from 1000)
#   5. the trained model through ROS behind the safety monitor (vla-demo --model, i.e. vla-up sim)
# Usage: scripts/workflow.sh [OUT]   (default outputs/workflow; every step's output stays there)
# Settings (environment): FAMILIES, EPISODES (demonstrations per family), DEMOS (offline|topics), EPOCHS,
# CONTINUE_EPOCHS, EXTRA_EPISODES, EXTRA_EPOCHS, FINETUNE_LR, THREADS, MODEL_ARGS (extra vla-train arguments),
# FINETUNE_ARGS (extra arguments of the fine-tuning stages), DAGGER_ROUNDS, DAGGER_EPISODES, DAGGER_MAX_STEPS,
# DAGGER_EPOCHS, EVAL_EPISODES,
# ROS_EPISODES, BASELINE, SEED. Deterministic given SEED (scene seeds, split, initialisation, batches).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((100 + RANDOM % 100))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"

out="${1:-outputs/workflow}"
# The defaults make the shipped checkpoint (src/vla_policy/checkpoints/default, see its MODEL_CARD.md):
# pick, 200 demonstrations, 45 epochs, 41 more, then 12 on 400 demonstrations, then 12 on 800; about
# 100 min on 2 CPU cores with native bf16.
families="${FAMILIES:-pick}"
episodes="${EPISODES:-200}"
demos="${DEMOS:-offline}"
epochs="${EPOCHS:-45}"
continue_epochs="${CONTINUE_EPOCHS:-41}"
extra_episodes="${EXTRA_EPISODES:-200 400}"
extra_epochs="${EXTRA_EPOCHS:-12}"
finetune_lr="${FINETUNE_LR:-1e-4}"
# The shipped checkpoint acts on the nearest training instruction (an inference option every stage sets).
finetune_args="${FINETUNE_ARGS:---model instruction_nearest=true}"
threads="${THREADS:-2}"
model_args="${MODEL_ARGS:---model instruction_nearest=true}"
rounds="${DAGGER_ROUNDS:-0}"
dagger_episodes="${DAGGER_EPISODES:-150}"
dagger_max_steps="${DAGGER_MAX_STEPS:-50}"
dagger_epochs="${DAGGER_EPOCHS:-12}"
eval_episodes="${EVAL_EPISODES:-50}"
ros_episodes="${ROS_EPISODES:-10}"
baseline="${BASELINE:-0}"
seed="${SEED:-0}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$root/$out/ros_log}"
mkdir -p "$out"
step() { printf '\n=== %s [%s]\n' "$*" "$(date +%H:%M:%S)"; }

step "1. demonstrations ($demos): $episodes per family of: $families"
if [ "$demos" = offline ]; then
  # One dataset per family, two families at a time (the simulator is single-threaded).
  pids=()
  for family in $families; do
    vla-dagger expert "$out/demos/$family" --families "$family" --episodes "$episodes" --seed "$seed" \
      --image-size 96 --no-progress >"$out/demos_$family.log" 2>&1 &
    pids+=($!)
    if [ "${#pids[@]}" -ge 2 ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  datasets=()
  for family in $families; do datasets+=("$out/demos/$family"); tail -n 3 "$out/demos_$family.log"; done
  extra=()  # per stage, its datasets (one per family): the next scene seeds, added stage by stage
  next_seed=$((seed + episodes))
  stage=0
  for n in $extra_episodes; do
    stage=$((stage + 1))
    stage_sets=""
    for family in $families; do
      vla-dagger expert "$out/demos_extra$stage/$family" --families "$family" --episodes "$n" \
        --seed "$next_seed" --image-size 96 --no-progress | tail -n 3
      stage_sets="$stage_sets $out/demos_extra$stage/$family"
    done
    extra+=("$stage_sets")
    next_seed=$((next_seed + n))
  done
else
  vla-demo --commander expert --record "$out/demos/all" --families "${families// /,}" --episodes "$episodes" \
    --seed "$seed" --out "$out/record"
  datasets=("$out/demos/all")
  extra=()
fi
# shellcheck disable=SC2068
for d in "${datasets[@]}" ${extra[@]}; do vla-dataset validate "$d"; done

step "2. training the native VLA ($epochs epochs)"
# shellcheck disable=SC2086
vla-train "${datasets[@]}" --output "$out/native_r0" --epochs "$epochs" --threads "$threads" --seed "$seed" \
  $model_args
model="$out/native_r0/best"
if [ "$continue_epochs" -gt 0 ]; then
  step "2b. $continue_epochs more epochs from $model (the schedule restarts, lr $finetune_lr)"
  # shellcheck disable=SC2086
  vla-train "${datasets[@]}" --output "$out/native_continue" --init-from "$model" --epochs "$continue_epochs" \
    --lr "$finetune_lr" --threads "$threads" --seed "$seed" $finetune_args
  model="$out/native_continue/best"
fi
stage=0
for stage_sets in "${extra[@]}"; do
  stage=$((stage + 1))
  # shellcheck disable=SC2206
  datasets+=($stage_sets)
  step "2c. stage $stage: $extra_epochs epochs from $model on ${#datasets[@]} datasets"
  # shellcheck disable=SC2086
  vla-train "${datasets[@]}" --output "$out/native_extra$stage" --init-from "$model" --epochs "$extra_epochs" \
    --lr "$finetune_lr" --threads "$threads" --seed "$seed" $finetune_args
  model="$out/native_extra$stage/best"
done
checkpoints=("$model")
if [ "$baseline" = 1 ]; then
  vla-train "${datasets[@]}" --output "$out/baseline" --policy textbook_baseline --epochs "$epochs" \
    --threads "$threads" --seed "$seed" --augmented-copies 0
  checkpoints+=("$out/baseline/best")
fi

for round in $(seq 1 "$rounds"); do
  step "3. DAgger round $round: $model drives, the expert labels"
  # shellcheck disable=SC2086
  vla-dagger collect "$model" "$out/dagger_$round" --families $families --episodes "$dagger_episodes" \
    --seed $((seed + 5000 * round)) --max-steps "$dagger_max_steps"
  datasets+=("$out/dagger_$round")
  # shellcheck disable=SC2086
  vla-train "${datasets[@]}" --output "$out/native_r$round" --init-from "$model" --epochs "$dagger_epochs" \
    --lr "$finetune_lr" --threads "$threads" --seed "$seed" $finetune_args
  model="$out/native_r$round/best"
  checkpoints[0]="$model"
done

step "4. evaluation: ${checkpoints[*]}"
# shellcheck disable=SC2086
vla-eval "${checkpoints[@]}" --output "$out/eval" --closed-loop --episodes "$eval_episodes" \
  --families $families --threads "$threads"

step "5. the model through ROS, behind the safety monitor"
for split in train heldout; do  # the same seeds as vla-eval's first ones: the two must agree within noise
  vla-demo --model "$model" --families "${families// /,}" --episodes "$ros_episodes" --seed 1000 \
    --split "$split" --out "$out/ros_$split"
done
step "workflow done: $out (eval/results.md, ros_train/ and ros_heldout/results.md); the checkpoint: $model"
