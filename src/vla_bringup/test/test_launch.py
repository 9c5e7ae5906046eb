"""Launch files are built from the plan; where launch_ros is missing (pip-only machines) they skip."""

import importlib.util
import runpy
from pathlib import Path

import pytest
from vla_bringup.plan import PROFILES, build_plan

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"
HAVE_LAUNCH = (
    importlib.util.find_spec("launch_ros") is not None and importlib.util.find_spec("launch") is not None
)


def test_one_launch_file_per_profile():
    assert sorted(p.name for p in LAUNCH_DIR.glob("*.launch.py")) == sorted(
        f"{p}.launch.py" for p in PROFILES
    )


@pytest.mark.skipif(
    not HAVE_LAUNCH, reason="launch/launch_ros are not installable from PyPI; run on a ROS 2 install"
)
@pytest.mark.parametrize("profile", PROFILES)
def test_launch_file_starts_the_plans_nodes(profile):
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import Node

    description = runpy.run_path(str(LAUNCH_DIR / f"{profile}.launch.py"))["generate_launch_description"]()
    declared = {a.name for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    plan = build_plan(profile)
    assert declared == set(plan.arguments)
    context = LaunchContext()
    for arg in description.entities:
        if isinstance(arg, DeclareLaunchArgument):
            arg.visit(context)
    (opaque,) = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    nodes = opaque.execute(context)
    assert len(nodes) == len(plan.nodes)
    assert all(isinstance(n, Node) for n in nodes)
