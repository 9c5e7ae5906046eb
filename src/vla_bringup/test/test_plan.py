"""The bringup plan as data: every profile builds, arguments are checked, sim bridges keep their contracts."""

import ast
import os
from pathlib import Path

import pytest
from vla_bringup.plan import PROFILE_ARGS, PROFILES, SIM_BRIDGES, PlanError, Sim, build_plan
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest
from vla_common.robots import ROBOT_COMMAND_JOINTS

from vla_bringup import plan as plan_module

SRC = Path(__file__).resolve().parents[2]


def console_scripts(package: str) -> set[str]:
    """The console scripts a package's setup.py declares (read, not executed)."""
    tree = ast.parse((SRC / package / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return {ast.literal_eval(e).split("=")[0].strip() for e in value.elts}
    return set()


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_builds_with_its_defaults(profile):
    plan = build_plan(profile)
    assert plan.nodes
    for node in plan.nodes:
        assert node.executable in console_scripts(node.package), (
            f"{node.package} does not declare {node.executable}"
        )
        for pf in node.param_files:
            assert (SRC / pf.package / pf.path).is_file(), f"{pf.package}/{pf.path} missing"


@pytest.mark.parametrize("profile", PROFILES)
def test_every_argument_choice_builds(profile):
    for arg in PROFILE_ARGS[profile]:
        for choice in arg.choices:
            given = {arg.name: choice}
            if profile == "sim" and arg.name == "sim" and choice != "embedded":
                given["commander"] = "policy"
            build_plan(profile, given)


def test_unknown_profile_argument_and_choice_are_refused():
    with pytest.raises(PlanError, match="unknown profile"):
        build_plan("simulation")
    with pytest.raises(PlanError, match="no argument"):
        build_plan("sim", {"robto": "panda"})
    with pytest.raises(PlanError, match="not one of"):
        build_plan("sim", {"robot": "kuka"})


def test_safety_monitor_is_the_only_path_to_the_robot():
    """The policy and the expert publish to /policy/joint_commands; only safety_node reaches the robot."""
    for profile in PROFILES:
        for commander in ("policy", "expert") if profile == "sim" else (None,):
            plan = build_plan(profile, {"commander": commander} if commander else {})
            names = [n.name for n in plan.nodes]
            assert "safety_node" in names
            for node in plan.nodes:
                if node.name in ("policy_node", "expert_node"):
                    targets = dict(node.remappings).get("/joint_commands", "/policy/joint_commands")
                    assert targets == "/policy/joint_commands", f"{profile}: {node.name} bypasses safety"


def test_a_dead_commander_leaves_the_safety_monitor_holding():
    """Commanders are optional (the monitor holds on their lost heartbeat); the monitor itself is required."""
    for profile in PROFILES:
        for commander in ("policy", "expert") if profile == "sim" else (None,):
            plan = build_plan(profile, {"commander": commander} if commander else {})
            required = {n.name: n.required for n in plan.nodes}
            assert required["safety_node"], profile
            for name in ("policy_node", "expert_node"):
                assert not required.get(name, False), f"{profile}: {name} death would stop the monitor"


@pytest.mark.parametrize("sim", list(Sim))
def test_sim_profiles_speak_their_bridges_topics(sim):
    """Contract of each simulator profile: where safe commands go, in which message type."""
    plan = build_plan("sim", {"sim": sim.value})
    bridge = SIM_BRIDGES[sim]
    safety = plan.node("safety_node")
    assert safety.parameters["output_adapter"] == bridge.adapter
    sent_to = safety.parameters.get("output_topic") or dict(safety.remappings).get(
        "/joint_commands", "/joint_commands"
    )
    assert sent_to == bridge.command_topic
    remaps = dict(plan.node("policy_node").remappings)
    assert remaps.get("/camera/image_raw", "/camera/image_raw") == bridge.camera_topic
    assert ("sim_node" in [n.name for n in plan.nodes]) == (sim is Sim.EMBEDDED)


@pytest.mark.parametrize("sim", list(Sim))
def test_bridge_adapters_are_ones_the_safety_node_has(sim):
    from vla_safety.adapters import OutputKind

    OutputKind(SIM_BRIDGES[sim].adapter)


def test_known_bridge_contracts():
    assert SIM_BRIDGES[Sim.ISAAC].command_topic == "/joint_command"  # Isaac Sim's ROS 2 bridge, JointState
    assert SIM_BRIDGES[Sim.GAZEBO].command_topic == "/forward_position_controller/commands"
    assert SIM_BRIDGES[Sim.GAZEBO].adapter == "float64_multi_array"
    with pytest.raises(PlanError, match="expert"):
        build_plan("sim", {"sim": "gazebo", "commander": "expert"})


@pytest.mark.parametrize("robot", ["panda", "ur5e", "so101"])
def test_every_robot_commands_only_joints_its_safety_profile_limits(robot):
    from vla_safety.limits import limited_joints

    safety = build_plan("robot", {"robot": robot}).node("safety_node")
    assert safety.parameters["joints"] == list(ROBOT_COMMAND_JOINTS[robot])
    assert set(ROBOT_COMMAND_JOINTS[robot]) <= set(limited_joints(robot))


# --- the shipped checkpoint ----------------------------------------------------------------------------


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A checkpoint installed as the workspace's default (share/vla_policy/checkpoints/default)."""
    path = tmp_path / "share" / "vla_policy" / "checkpoints" / "default"
    path.mkdir(parents=True)
    (path / "embodiment.json").write_text("{}")
    monkeypatch.setattr(plan_module, "default_checkpoint", lambda: path)
    return path


def test_the_embedded_sim_runs_the_shipped_checkpoint_unless_a_model_is_given(shipped, tmp_path):
    assert build_plan("sim").node("policy_node").parameters["checkpoint"] == str(shipped)
    mine = tmp_path / "outputs" / "run" / "best"
    given = build_plan("sim", {"model": str(mine)}).node("policy_node").parameters
    assert given["checkpoint"] == str(mine)
    relative = build_plan("sim", {"model": "outputs/run/best"}).node("policy_node").parameters
    assert relative["checkpoint"] == os.path.abspath("outputs/run/best")


@pytest.mark.parametrize("sim", [s.value for s in Sim if s is not Sim.EMBEDDED])
def test_other_simulators_and_the_robot_never_get_the_shipped_checkpoint(shipped, sim):
    # It was trained in the embedded simulator only: elsewhere the node starts without one (and says so).
    assert "checkpoint" not in build_plan("sim", {"sim": sim}).node("policy_node").parameters
    assert "checkpoint" not in build_plan("robot").node("policy_node").parameters
    given = build_plan("robot", {"model": "/models/real"}).node("policy_node").parameters
    assert given["checkpoint"] == "/models/real"


def test_without_a_shipped_checkpoint_the_sim_policy_has_none(monkeypatch):
    monkeypatch.setattr(plan_module, "default_checkpoint", lambda: None)
    assert "checkpoint" not in build_plan("sim").node("policy_node").parameters
    assert build_plan("sim", {"model": "/m"}).node("policy_node").parameters["checkpoint"] == "/m"


def test_the_expert_commander_runs_no_policy(shipped):
    assert "policy_node" not in [n.name for n in build_plan("sim", {"commander": "expert"}).nodes]


def _checkpoint(root: Path, cameras: list[tuple[str, int, int]]) -> str:
    joints = ROBOT_COMMAND_JOINTS["panda"]
    EmbodimentManifest(
        robot_type="panda", joint_names=joints, action_names=joints,
        action_type=ActionType.ABSOLUTE_JOINT_POSITION, fps=10.0,
        cameras=tuple(CameraSpec(n, height=h, width=w) for n, w, h in cameras),
    ).save(root / "embodiment.json")  # fmt: skip
    return str(root)


def test_the_embedded_sim_renders_what_the_policy_was_trained_on(tmp_path):
    model = _checkpoint(tmp_path / "m", [("front", 96, 96), ("wrist", 96, 96)])
    plan = build_plan("sim", {"model": model})
    sim = plan.node("sim_node").parameters
    assert (sim["wrist_camera"], sim["camera_width"], sim["camera_height"]) == (True, 96, 96)
    policy = plan.node("policy_node").parameters
    assert policy["camera_names"] == ["front", "wrist"]
    assert policy["camera_topics"] == ["/camera/image_raw", "/wrist_camera/image_raw"]


def test_a_front_camera_model_keeps_the_wrist_camera_off_and_odd_cameras_are_left_to_the_node(tmp_path):
    front = build_plan("sim", {"model": _checkpoint(tmp_path / "a", [("front", 128, 96)])})
    sim = front.node("sim_node").parameters
    assert "wrist_camera" not in sim and (sim["camera_width"], sim["camera_height"]) == (128, 96)
    # A camera the embedded sim does not have: the node gets no camera list and refuses the model itself.
    odd = build_plan("sim", {"model": _checkpoint(tmp_path / "b", [("top", 96, 96)])})
    assert "camera_names" not in odd.node("policy_node").parameters
    # An unreadable manifest changes nothing.
    broken = tmp_path / "c"
    broken.mkdir()
    (broken / "embodiment.json").write_text("not json")
    assert "camera_names" not in build_plan("sim", {"model": str(broken)}).node("policy_node").parameters


# Nodes whose processes publish or subscribe camera images, per profile (the large-image transport goes there).
IMAGE_NODES = {"camera_node", "policy_node", "sim_node", "collector_node"}


@pytest.mark.parametrize(
    "profile, given",
    [
        ("sim", {}),
        ("sim", {"commander": "expert"}),
        ("sim", {"sim": "gazebo"}),
        ("robot", {}),
        ("record", {}),
        ("record", {"sim": "none"}),
    ],
)
def test_every_image_process_is_marked_for_the_image_transport(profile, given):
    from vla_bringup.plan import IMAGE_TRANSPORT_ENV

    plan = build_plan(profile, given)
    for node in plan.nodes:
        assert node.images == (node.executable in IMAGE_NODES), (profile, node.name)
    assert any(n.images for n in plan.nodes)  # every profile moves images somewhere
    for pf in IMAGE_TRANSPORT_ENV.values():
        assert (SRC / pf.package / pf.path).is_file(), f"{pf.package}/{pf.path} missing"


def test_the_embedded_sim_takes_a_real_time_factor():
    sim = build_plan("sim", {"commander": "expert"}).node("sim_node")
    assert sim.parameters["real_time_factor"] == 1.0
    slow = build_plan("sim", {"commander": "expert", "real_time_factor": "0.5"}).node("sim_node")
    assert slow.parameters["real_time_factor"] == 0.5
    for bad in ("0", "-1", "fast", "nan"):
        with pytest.raises(PlanError, match="real_time_factor"):
            build_plan("sim", {"commander": "expert", "real_time_factor": bad})
