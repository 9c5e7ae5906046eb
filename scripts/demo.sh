#!/usr/bin/env bash
# The main job on the embedded default: setup (idempotent), then vla-demo, which starts the simulator, the
# safety monitor and a commander as separate processes over real topics (vla-up sim), runs a set of tasks
# and prints a success table and latency figures. Arguments go to vla-demo (see vla-demo --help).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((100 + RANDOM % 100))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$root/outputs/ros_log}"
# vla-demo runs the shipped VLA checkpoint (src/vla_policy/checkpoints/default) unless told otherwise.
exec vla-demo "$@"
