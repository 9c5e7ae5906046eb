"""ros2 launch vla_bringup robot.launch.py [name:=value ...]: the 'robot' profile of vla_bringup.plan (same as vla-up robot)."""

from vla_bringup.launch_support import launch_description


def generate_launch_description():
    return launch_description("robot")
