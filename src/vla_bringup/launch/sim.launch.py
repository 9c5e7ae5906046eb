"""ros2 launch vla_bringup sim.launch.py [name:=value ...]: the 'sim' profile of vla_bringup.plan (same as vla-up sim)."""

from vla_bringup.launch_support import launch_description


def generate_launch_description():
    return launch_description("sim")
