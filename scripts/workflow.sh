#!/usr/bin/env bash
# The recipe that makes the shipped checkpoint, from nothing, in the embedded simulator (defaults below):
#   1. demonstrations: the scripted expert, written straight from the Gymnasium env (DEMOS=offline, default;
#      two processes) or recorded through topics (DEMOS=topics: expert_node + collector_node, real time)
#   2. vla-train: the native VLA (and, with BASELINE=1, the textbook baseline on the same data), then
#      CONTINUE_EPOCHS more epochs from its checkpoint (a warm restart of the schedule), then one stage per
#      number in EXTRA_EPISODES: that many more demonstrations (the next scene seeds), EXTRA_EPOCHS on all
#   2d-2k. (MULTI=1, default) from the pick model to one of pick, place, push and stack: settled demonstrations
#      of each family, the referent pathway trained on place, heads on frozen encoders for three families,
#      two epochs end to end, the heads on every demonstration (vla-train --freeze-encoders), two rounds of
#      push DAgger, then the heads again on everything; then (2j) place and push DAgger driven by that model and
#      the heads on more place and push demonstrations and that round; (2k) one more push round driven by
#      that model and the heads again; (2l) the held pathway for stack, place and push (vla-train-held):
#      referent questions asked once at the first frame of a look tuned on first frames, an actor on the
#      answers; (2m) a stack DAgger round driven by it, and the held pathway again with that round
#   3. DAGGER_ROUNDS rounds of DAgger: the policy drives (DAGGER_MAX_STEPS per episode), the expert labels,
#      fine-tune on everything (off by default: on pick it bought nothing, see the README)
#   4. vla-eval: localization probe, offline error and closed-loop success per family, seen and held-out
#      instructions (EVAL_EPISODES unseen seeds per family and split, from EVAL_SEED=2000)
#   5. the trained model through ROS behind the safety monitor (vla-demo --model, i.e. vla-up sim)
# Usage: scripts/workflow.sh [OUT]   (default outputs/workflow; every step's output stays there)
# Settings (environment): FAMILIES, EPISODES (demonstrations per family), DEMOS (offline|topics), EPOCHS,
# CONTINUE_EPOCHS, EXTRA_EPISODES, EXTRA_EPOCHS, FINETUNE_LR, THREADS, MODEL_ARGS (extra vla-train arguments),
# FINETUNE_ARGS (extra arguments of the fine-tuning stages), DAGGER_ROUNDS, DAGGER_EPISODES, DAGGER_MAX_STEPS,
# DAGGER_EPOCHS, EVAL_EPISODES, EVAL_SEED, MULTI, PLACE_DEMOS, PUSH_DEMOS, PICK_DEMOS, STACK_DEMOS,
# STACK_MORE_DEMOS, PLACE_MORE_DEMOS, PUSH_MORE_DEMOS, DAGGER3_DEMOS, DAGGER4_PUSH, FINAL_HEAD_ARGS, STACK_HELD_DEMOS,
# HELD_DAGGER_STACK, ROS_EPISODES,
# BASELINE, SEED.
# Deterministic given SEED (scene seeds, split, initialisation, batches).
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
# pick, 200 demonstrations, 45 epochs, 41 more, then 12 on 400 demonstrations, then 12 on 800 (about 100 min
# on 2 CPU cores with native bf16, 3 hours without); then (MULTI=1) the settled demonstrations of four
# families (about 80 min on both cores), stages 2e-2g (about 85 min on a 2-core AVX2 EPYC), 2h-2i (about
# 80 min), 2j (about 2 hours) and 2k (about 35 min).
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
# Scene seeds of the evaluation, in no training set: the settled sets reach 1899 (push), DAgger starts at 5000.
eval_seed="${EVAL_SEED:-2000}"
ros_episodes="${ROS_EPISODES:-10}"
baseline="${BASELINE:-0}"
seed="${SEED:-0}"
# MULTI=1: go on from the pick model to pick, place, push and stack (step 2d-2k). Settled demonstrations per
# family as SEED:EPISODES datasets (scene seeds SEED..SEED+EPISODES-1; the shipped model's exact sets).
multi="${MULTI:-1}"
PLACE_DEMOS="${PLACE_DEMOS:-0:100 100:100 200:18 300:300 600:300}"
PUSH_DEMOS="${PUSH_DEMOS:-0:200 200:300 500:300 1100:400 1500:400}"
PICK_DEMOS="${PICK_DEMOS:-0:200 200:200 400:200}"
STACK_DEMOS="${STACK_DEMOS:-0:150}"
STACK_MORE_DEMOS="${STACK_MORE_DEMOS:-150:150 300:150}"  # for stage 2i only
PLACE_MORE_DEMOS="${PLACE_MORE_DEMOS:-218:82 900:700}"  # for the last two stages only (2j, 2k)
PUSH_MORE_DEMOS="${PUSH_MORE_DEMOS:-800:300}"  # for the last two stages only (2j, 2k)
# Stage 2j's DAgger round, driven by stage 2i: FAMILY:SEED:EPISODES:MAX_STEPS
DAGGER3_DEMOS="${DAGGER3_DEMOS:-place:6000:200:80 place:6200:200:80 push:5400:200:60 push:5600:400:60}"
DAGGER4_PUSH="${DAGGER4_PUSH:-6400:400}"  # SEED:EPISODES of the push round driven by stage 2j (2k)
FINAL_HEAD_ARGS="${FINAL_HEAD_ARGS:-}"  # extra vla-train arguments of the last heads stage (2k)
STACK_HELD_DEMOS="${STACK_HELD_DEMOS:-450:300 750:300}"  # with stack 0-449 above: the held pathway's 1,050 (2l)
HELD_DAGGER_STACK="${HELD_DAGGER_STACK:-8000:200:100}"  # SEED:EPISODES:MAX_STEPS of the stack round of 2m
export ROS_LOG_DIR="${ROS_LOG_DIR:-$root/$out/ros_log}"
mkdir -p "$out"
step() { printf '\n=== %s [%s]\n' "$*" "$(date +%H:%M:%S)"; }
# Jobs two at a time (2 cores; the simulator is single-threaded): `in_background CMD ARGS...` starts one, first
# waiting for the older when two run; `wait_background` waits for the rest. A failed job stops the script.
background=()
in_background() {
  "$@" &
  background+=($!)
  if [ "${#background[@]}" -ge 2 ]; then
    wait "${background[0]}"
    background=("${background[@]:1}")
  fi
}
wait_background() {
  local pid
  for pid in "${background[@]}"; do wait "$pid"; done
  background=()
}

step "1. demonstrations ($demos): $episodes per family of: $families"
if [ "$demos" = offline ]; then
  demos() {  # demos FAMILY: its dataset (log: demos_FAMILY.log)
    vla-dagger expert "$out/demos/$1" --families "$1" --episodes "$episodes" --seed "$seed" --image-size 96 \
      --no-progress >"$out/demos_$1.log" 2>&1
  }
  for family in $families; do in_background demos "$family"; done
  wait_background
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
if [ "$multi" = 1 ]; then
  # From the pick model to one model of pick, place, push and stack (the shipped checkpoint's stages; see
  # its MODEL_CARD.md and the README's status for what each bought).
  step "2d. settled demonstrations (--settle-steps 5) for the referent stages"
  settled_set() {  # settled_set DIR FAMILY SEED EPISODES: one settled dataset (log: DIR.log)
    vla-dagger expert "$1" --families "$2" --seed "$3" --episodes "$4" --image-size 96 --settle-steps 5 \
      --no-progress >"$1.log" 2>&1
  }
  settled() {  # settled FAMILY SEED:EPISODES... -> one dataset per spec, two at a time; prints their roots
    local family="$1" spec roots=()
    shift
    for spec in "$@"; do
      roots+=("$out/settled/${family}_${spec%%:*}")
      in_background settled_set "${roots[-1]}" "$family" "${spec%%:*}" "${spec##*:}"
    done
    wait_background
    echo "${roots[@]}"
  }
  mkdir -p "$out/settled"
  # shellcheck disable=SC2086
  read -r -a place_sets <<<"$(settled place $PLACE_DEMOS)"
  # shellcheck disable=SC2086
  read -r -a push_sets <<<"$(settled push $PUSH_DEMOS)"
  # shellcheck disable=SC2086
  read -r -a pick_sets <<<"$(settled pick $PICK_DEMOS)"
  # shellcheck disable=SC2086
  read -r -a stack_sets <<<"$(settled stack $STACK_DEMOS)"
  referents="--model localization_weight=1 --model referent_input=true"
  heads="$referents --model referent_slots=goal --model referent_estimate_fraction=0"
  frozen="--freeze-encoders --augmented-copies 1 --epochs 60 --batch-size 256 --lr 1e-3 --warmup-steps 20"
  step "2e. the referent pathway on place (end to end, 875 steps at lr 3e-4, then 6 epochs at 2e-4)"
  # shellcheck disable=SC2086
  vla-train "${place_sets[0]}" "${place_sets[1]}" --output "$out/ref_place" --init-from "$model" --epochs 12 \
    --max-steps 875 --lr 3e-4 --threads "$threads" --seed "$seed" $referents
  # shellcheck disable=SC2086
  vla-train "${place_sets[0]}" "${place_sets[1]}" --output "$out/ref_mix" --init-from "$out/ref_place/best" \
    --epochs 6 --lr 2e-4 --threads "$threads" --seed "$seed" $referents --model referent_estimate_fraction=0.5
  three=("${pick_sets[0]}" "${place_sets[0]}" "${place_sets[1]}" "${push_sets[0]}")
  step "2f. pick, place and push: heads on frozen encoders, then 2 epochs end to end"
  # shellcheck disable=SC2086
  vla-train "${three[@]}" --output "$out/fz_ppp" --init-from "$out/ref_mix/best" $frozen --threads "$threads" \
    --seed "$seed" $heads
  # shellcheck disable=SC2086
  vla-train "${three[@]}" --output "$out/e2e_ppp" --init-from "$out/fz_ppp/best" --epochs 2 --lr 2e-4 \
    --threads "$threads" --seed "$seed" $heads --model instruction_nearest=true
  step "2g. the heads on every settled demonstration, on those frozen encoders"
  # shellcheck disable=SC2086
  vla-train "${pick_sets[@]}" "${place_sets[@]}" "${push_sets[@]}" "${stack_sets[@]}" --output "$out/fz_all" \
    --init-from "$out/e2e_ppp/best" $frozen --threads "$threads" --seed "$seed" $heads \
    --model instruction_nearest=true
  step "2h. push DAgger: the model drives push, the expert labels (two rounds, 60 steps per episode)"
  collect() {  # collect DRIVER DIR FAMILY SEED EPISODES MAX_STEPS: a DAgger round's dataset DIR (log: DIR.log)
    vla-dagger collect "$1" "$2" --families "$3" --seed "$4" --episodes "$5" --max-steps "$6" --settle-steps 5 \
      --no-progress >"$2.log" 2>&1
  }
  in_background collect "$out/fz_all/best" "$out/dagger_push_5000" push 5000 100 60
  in_background collect "$out/fz_all/best" "$out/dagger_push_5100" push 5100 100 60
  wait_background
  round1=("$out/dagger_push_5000" "$out/dagger_push_5100")
  # shellcheck disable=SC2086
  vla-train "${push_sets[@]}" "${round1[@]}" --output "$out/fz_push_dg1" --init-from "$out/e2e_ppp/best" $frozen \
    --threads "$threads" --seed "$seed" $heads --model instruction_nearest=true
  collect "$out/fz_push_dg1/best" "$out/dagger_push_5200" push 5200 200 60
  round2="$out/dagger_push_5200"
  tail -n 3 "${round1[@]/%/.log}" "$round2.log"
  step "2i. the heads on every settled demonstration and both push rounds, on the same frozen encoders"
  read -r -a more_stack <<<"$(settled stack $STACK_MORE_DEMOS)"
  # shellcheck disable=SC2086
  vla-train "${pick_sets[@]}" "${place_sets[@]}" "${push_sets[@]}" "${stack_sets[@]}" "${more_stack[@]}" \
    "${round1[@]}" "$round2" --output "$out/fz_all2" --init-from "$out/e2e_ppp/best" $frozen \
    --threads "$threads" --seed "$seed" $heads --model instruction_nearest=true
  step "2j. place and push DAgger driven by stage 2i; the heads on more place and push and these rounds"
  # More of the seeds the sets above skip (place 218-299 and 900-1599, push 800-1099): with them, place 0-1599,
  # push 0-1899, pick 0-599 and stack 0-149.
  # shellcheck disable=SC2086
  read -r -a place_more <<<"$(settled place $PLACE_MORE_DEMOS)"
  # shellcheck disable=SC2086
  read -r -a push_more <<<"$(settled push $PUSH_MORE_DEMOS)"
  round3=()
  for spec in $DAGGER3_DEMOS; do  # FAMILY:SEED:EPISODES:MAX_STEPS
    IFS=: read -r family dseed n max_steps <<<"$spec"
    round3+=("$out/dagger3_${family}_$dseed")
    in_background collect "$out/fz_all2/best" "${round3[-1]}" "$family" "$dseed" "$n" "$max_steps"
  done
  wait_background
  # shellcheck disable=SC2086
  vla-train "${pick_sets[@]}" "${place_sets[@]}" "${place_more[@]}" "${push_sets[@]}" "${push_more[@]}" \
    "${stack_sets[@]}" "${round3[@]}" --output "$out/fz_all3" --init-from "$out/fz_all2/best" $frozen \
    --threads "$threads" --seed "$seed" $heads --model instruction_nearest=true
  step "2k. push DAgger driven by stage 2j; the heads again with that round"
  IFS=: read -r dseed n <<<"$DAGGER4_PUSH"
  collect "$out/fz_all3/best" "$out/dagger4_push_$dseed" push "$dseed" "$n" 60
  tail -n 3 "$out/dagger4_push_$dseed.log"
  # shellcheck disable=SC2086
  vla-train "${pick_sets[@]}" "${place_sets[@]}" "${place_more[@]}" "${push_sets[@]}" "${push_more[@]}" \
    "${stack_sets[@]}" "${round3[@]}" "$out/dagger4_push_$dseed" --output "$out/fz_all4" \
    --init-from "$out/fz_all3/best" $frozen --threads "$threads" --seed "$seed" $heads \
    --model instruction_nearest=true $FINAL_HEAD_ARGS
  step "2l. the held pathway for stack, place and push: a look tuned on first frames, held, an actor on it"
  # shellcheck disable=SC2086
  read -r -a held_stack <<<"$(settled stack $STACK_HELD_DEMOS)"
  all_sets=("${pick_sets[@]}" "${place_sets[@]}" "${place_more[@]}" "${push_sets[@]}" "${push_more[@]}"
    "${stack_sets[@]}" "${more_stack[@]}" "${held_stack[@]}")
  held() {  # held OUT LOOK_EPOCHS [DATASET...]: vla-train-held on stage 2k's model and every settled set
    local dir="$1" look="$2"
    shift 2
    vla-train-held "$out/fz_all4/best" "${all_sets[@]}" "$@" --output "$dir" --held-families stack place push \
      --instruction --look-epochs "$look" --threads "$threads" --seed "$seed" --no-progress
  }
  held "$out/held1" 6
  step "2m. stack DAgger driven by the held pathway; the held pathway again on everything and that round"
  IFS=: read -r dseed n max_steps <<<"$HELD_DAGGER_STACK"
  collect "$out/held1" "$out/dagger_held_stack_$dseed" stack "$dseed" "$n" "$max_steps"
  tail -n 3 "$out/dagger_held_stack_$dseed.log"
  held "$out/held" 10 "$out/dagger_held_stack_$dseed"
  model="$out/held"
  families="pick place push stack"
fi
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
  --families $families --threads "$threads" --seed "$eval_seed"

step "5. the model through ROS, behind the safety monitor"
for split in train heldout; do  # the same seeds as vla-eval's first ones: the two must agree within noise
  vla-demo --model "$model" --families "${families// /,}" --episodes "$ros_episodes" --seed "$eval_seed" \
    --split "$split" --out "$out/ros_$split"
done
step "workflow done: $out (eval/results.md, ros_train/ and ros_heldout/results.md); the checkpoint: $model"
