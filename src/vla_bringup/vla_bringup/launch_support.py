"""Build a ``launch`` description from the bringup plan, for ``ros2 launch vla_bringup <profile>.launch.py``.

The launch files are three lines each: they call :func:`launch_description` with their profile, so the
arguments, nodes, parameters and remappings all come from :mod:`vla_bringup.plan`, the same plan ``vla-up``
runs. ``launch`` and ``launch_ros`` are imported here only, so the rest of the package works without them.
"""

from __future__ import annotations

from typing import Any

from vla_bringup.plan import PROFILE_ARGS, build_plan


def nodes_for(profile: str, arguments: dict[str, str]) -> list[Any]:
    """``launch_ros`` Node actions for the plan of ``profile`` with resolved launch arguments."""
    from launch_ros.actions import Node

    from vla_bringup.runner import node_env, resolve_param_file

    plan = build_plan(profile, arguments)
    log_level = plan.arguments["log_level"]
    return [
        Node(
            package=node.package,
            executable=node.executable,
            name=node.name,
            output="screen",
            emulate_tty=True,
            parameters=[*(resolve_param_file(pf) for pf in node.param_files), dict(node.parameters)],
            remappings=list(node.remappings),
            additional_env=node_env(node) or None,  # image processes: the large-image transport
            arguments=["--ros-args", "--log-level", log_level],
            on_exit=None if not node.required else _shutdown_on_exit(node.name),
        )
        for node in plan.nodes
    ]


def _shutdown_on_exit(name: str) -> list[Any]:
    from launch.actions import Shutdown

    return [Shutdown(reason=f"required node {name} exited")]


def launch_description(profile: str) -> Any:
    """The LaunchDescription of ``profile``: one DeclareLaunchArgument per plan argument, then the nodes."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    declared = [
        DeclareLaunchArgument(
            a.name, default_value=a.default, description=a.description, choices=list(a.choices) or None
        )
        for a in PROFILE_ARGS[profile]
    ]

    def expand(context: Any) -> list[Any]:
        values = {a.name: context.launch_configurations[a.name] for a in PROFILE_ARGS[profile]}
        return nodes_for(profile, values)

    return LaunchDescription([*declared, OpaqueFunction(function=expand)])
