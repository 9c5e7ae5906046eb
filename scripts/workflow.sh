#!/usr/bin/env bash
# The end-to-end workflow on the embedded simulator, one step after another:
#   1. demonstrations: the scripted expert, recorded through topics (expert_node + collector_node, real time)
#      or, with DEMOS=offline, written straight from the Gymnasium env (same tasks, expert and writer; faster)
#   2. vla-train: the native VLA and the textbook baseline on the same data
#   3. DAGGER_ROUNDS rounds of DAgger: the policy drives, the expert labels, retrain on everything
#   4. vla-eval: offline error and closed-loop success per family, seen and held-out instructions, side by side
#   5. the trained model through ROS behind the safety monitor (vla-demo --model, i.e. vla-up sim)
# Usage: scripts/workflow.sh [OUT]   (default outputs/workflow; every step's output stays there)
# Settings (environment): FAMILIES, EPISODES (demonstrations per family), DEMOS (topics|offline), EPOCHS,
# THREADS, DAGGER_ROUNDS, DAGGER_EPISODES, EVAL_EPISODES.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((100 + RANDOM % 100))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"

out="${1:-outputs/workflow}"
families="${FAMILIES:-pick push place stack}"
episodes="${EPISODES:-150}"
demos="${DEMOS:-topics}"
epochs="${EPOCHS:-30}"
threads="${THREADS:-2}"
rounds="${DAGGER_ROUNDS:-0}"
dagger_episodes="${DAGGER_EPISODES:-50}"
eval_episodes="${EVAL_EPISODES:-10}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$root/$out/ros_log}"
mkdir -p "$out"
step() { printf '\n=== %s\n' "$*"; }

step "1. demonstrations ($demos): $episodes per family of: $families"
if [ "$demos" = offline ]; then
  # shellcheck disable=SC2086
  vla-dagger expert "$out/demos" --families $families --episodes "$episodes" --seed 0
else
  vla-demo --commander expert --record "$out/demos" --families "${families// /,}" --episodes "$episodes" \
    --seed 0 --out "$out/record"
fi
vla-dataset validate "$out/demos"

step "2. training (native VLA and textbook baseline, $epochs epochs)"
datasets=("$out/demos")
vla-train "${datasets[@]}" --output "$out/native_r0" --epochs "$epochs" --threads "$threads"
vla-train "${datasets[@]}" --output "$out/baseline" --policy textbook_baseline --epochs "$epochs" \
  --threads "$threads"
model="$out/native_r0/best"

for round in $(seq 1 "$rounds"); do
  step "3. DAgger round $round: $model drives, the expert labels"
  # shellcheck disable=SC2086
  vla-dagger collect "$model" "$out/dagger_$round" --families $families --episodes "$dagger_episodes" \
    --seed $((round * 1000000))
  datasets+=("$out/dagger_$round")
  vla-train "${datasets[@]}" --output "$out/native_r$round" --epochs "$epochs" --threads "$threads"
  model="$out/native_r$round/best"
done

step "4. evaluation: $model against the baseline"
# shellcheck disable=SC2086
vla-eval "$model" "$out/baseline/best" --output "$out/eval" --closed-loop --episodes "$eval_episodes" \
  --families $families --threads "$threads"

step "5. the model through ROS, behind the safety monitor"
vla-demo --model "$model" --families "${families// /,}" --episodes 2 --out "$out/ros"
echo "workflow done: $out (eval/results.md, ros/results.md)"
