"""Launch files, robot profiles, the bringup plan and the vla-up runner for machines without ros2 launch."""
