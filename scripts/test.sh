#!/usr/bin/env bash
# The whole test suite: setup (idempotent), then colcon test over all packages, failing when any test fails.
# ROS traffic is isolated: its own ROS_DOMAIN_ID, localhost-only discovery, logs inside build/.
# Extra arguments go to colcon test, e.g.  scripts/test.sh --packages-select vla_safety
# Heavy tests:  scripts/test.sh --pytest-args -m heavy
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
# shellcheck source=scripts/env.sh
source scripts/env.sh

# A domain of our own per run (1-232 is valid; 100-199 keeps clear of the default 0 and of other tools).
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID_OVERRIDE:-$((100 + RANDOM % 100))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_LOG_DIR="$root/build/ros_log"
export PYTHONDONTWRITEBYTECODE=1
mkdir -p "$ROS_LOG_DIR"
echo "[test] ROS_DOMAIN_ID=$ROS_DOMAIN_ID, discovery LOCALHOST, logs in $ROS_LOG_DIR"

# Sequential: node tests of different packages must not share topics, and 2 cores gain little from overlap.
status=0
colcon test --executor sequential --return-code-on-test-failure \
  --event-handlers console_direct+ summary+ status- \
  --build-base "$root/build" --install-base "$root/install" --base-paths "$root/src" "$@" || status=$?
colcon test-result --test-result-base "$root/build" --verbose || status=$((status ? status : 1))
exit "$status"
