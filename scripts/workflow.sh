#!/usr/bin/env bash
# The recipe that makes the shipped checkpoint, from nothing, in the embedded simulator (defaults below):
#   1. demonstrations: the scripted expert, written straight from the Gymnasium env (DEMOS=offline, default;
#      two processes) or recorded through topics (DEMOS=topics: expert_node + collector_node, real time)
#   2. vla-train: the native VLA (and, with BASELINE=1, the textbook baseline on the same data)
#   3. DAGGER_ROUNDS rounds of DAgger: the policy drives, the expert labels, retrain on everything
#   4. vla-eval: localization probe, offline error and closed-loop success per family, seen and held-out
#      instructions (EVAL_EPISODES unseen seeds per family and split, from 1000)
#   5. the trained model through ROS behind the safety monitor (vla-demo --model, i.e. vla-up sim)
# Usage: scripts/workflow.sh [OUT]   (default outputs/workflow; every step's output stays there)
# Settings (environment): FAMILIES, EPISODES (demonstrations per family), DEMOS (offline|topics), EPOCHS,
# THREADS, MODEL_ARGS (extra vla-train arguments), DAGGER_ROUNDS, DAGGER_EPISODES, EVAL_EPISODES,
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
# pick, 200 demonstrations, 45 epochs; about 40 min on 2 CPU cores with native bf16.
families="${FAMILIES:-pick}"
episodes="${EPISODES:-200}"
demos="${DEMOS:-offline}"
epochs="${EPOCHS:-45}"
threads="${THREADS:-2}"
model_args="${MODEL_ARGS:-}"
rounds="${DAGGER_ROUNDS:-0}"
dagger_episodes="${DAGGER_EPISODES:-50}"
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
else
  vla-demo --commander expert --record "$out/demos/all" --families "${families// /,}" --episodes "$episodes" \
    --seed "$seed" --out "$out/record"
  datasets=("$out/demos/all")
fi
for d in "${datasets[@]}"; do vla-dataset validate "$d"; done

step "2. training the native VLA ($epochs epochs)"
# shellcheck disable=SC2086
vla-train "${datasets[@]}" --output "$out/native_r0" --epochs "$epochs" --threads "$threads" --seed "$seed" \
  $model_args
model="$out/native_r0/best"
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
    --seed $((seed + round * 1000000))
  datasets+=("$out/dagger_$round")
  # shellcheck disable=SC2086
  vla-train "${datasets[@]}" --output "$out/native_r$round" --epochs "$epochs" --threads "$threads" \
    --seed "$seed" $model_args
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
