#!/usr/bin/env bash
# Source ROS 2 Jazzy and the workspace, then run the command (default: the sim launch).
set -e
source /opt/ros/jazzy/setup.bash
source /ws/scripts/env.sh
exec "$@"
