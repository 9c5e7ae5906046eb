"""ros2 launch vla_bringup record.launch.py [name:=value ...]: the 'record' profile of vla_bringup.plan (same as vla-up record)."""

from vla_bringup.launch_support import launch_description


def generate_launch_description():
    return launch_description("record")
