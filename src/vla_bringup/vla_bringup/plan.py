"""The bringup plan: which nodes a profile starts, with what parameters and remappings, as pure data.

One plan feeds both the launch files (``launch/*.launch.py``, through :mod:`vla_bringup.launch_support`) and
the ``vla-up`` runner (:mod:`vla_bringup.runner`), so the two cannot drift apart. No rclpy, no launch here.

Profiles:
  ``sim``     simulator + policy + safety monitor. ``sim:=embedded`` (default) starts our PyBullet
              ``sim_node``; ``sim:=gazebo`` / ``sim:=isaac`` start nothing for the simulator and speak the
              topics and message types of those bridges instead (see :data:`SIM_BRIDGES`).
  ``robot``   camera + policy + safety monitor for a real arm; the safety output goes to the driver through
              the adapter its robot profile names.
  ``record``  demonstrations through topics: simulator (or robot) + a commander (the scripted expert in sim)
              + safety monitor + collector.

Camera images: every node that publishes or subscribes them is marked ``images=True``, and both front ends give
its process the Fast DDS settings camera-sized frames need (:data:`IMAGE_TRANSPORT_ENV`), so a user exports
nothing.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vla_common.manifest import EmbodimentManifest, ManifestError
from vla_common.robots import ROBOT_COMMAND_JOINTS
from vla_policy.shipped import default_checkpoint

ParamValue = bool | int | float | str | list[str] | list[float] | list[int]


class PlanError(ValueError):
    """A profile or argument is unknown or malformed."""


@dataclass(frozen=True)
class ParamFile:
    """A parameter YAML installed by a package (``share/<package>/<path>``), found through the ament index."""

    package: str
    path: str


@dataclass(frozen=True)
class NodeSpec:
    """One node process: ``ros2 run <package> <executable> --ros-args ...``."""

    name: str
    package: str
    executable: str
    parameters: Mapping[str, ParamValue] = field(default_factory=dict)
    param_files: tuple[ParamFile, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()
    required: bool = True  # the whole plan stops when a required node dies
    env: Mapping[str, str] = field(default_factory=dict)
    images: bool = False  # publishes or subscribes camera images: its process gets IMAGE_TRANSPORT_ENV

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise PlanError(f"node name {self.name!r} must be a valid ROS node name")
        for src, dst in self.remappings:
            if not src or not dst:
                raise PlanError(f"node {self.name}: empty remapping {src!r}:={dst!r}")
        # identity remappings (a bridge that uses the default name) are noise on the command line
        object.__setattr__(self, "remappings", tuple((s, d) for s, d in self.remappings if s != d))


@dataclass(frozen=True)
class Argument:
    """A launch argument (``name:=value``) with its default and, optionally, the values it accepts."""

    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    profile: str
    arguments: Mapping[str, str]
    nodes: tuple[NodeSpec, ...]

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"plan {self.profile!r} has no node {name!r}: {[n.name for n in self.nodes]}")


# Camera-sized images need Fast DDS's large shared-memory segment in the process that publishes them: the default
# segment is 512 KB, a 640x480 rgb8 frame is 921 KB, and best-effort frames then mostly drop (measured in
# bench/perception_transport.py; why: src/vla_perception/README.md). Subscribers get it too: it costs them
# nothing (a process's segment holds only what it sends) and the plan need not know which end of a topic a node
# is. Fast DDS 2.x reads the FASTRTPS_ name, 3.x the FASTDDS_ one. The front ends resolve the file like a
# parameter file.
IMAGE_TRANSPORT_PROFILE = ParamFile("vla_perception", "config/fastdds_profile.xml")
IMAGE_TRANSPORT_ENV: Mapping[str, ParamFile] = {
    "FASTRTPS_DEFAULT_PROFILES_FILE": IMAGE_TRANSPORT_PROFILE,
    "FASTDDS_DEFAULT_PROFILES_FILE": IMAGE_TRANSPORT_PROFILE,
}
# A Fast DDS transport the user set up (their own profile may also pin network interfaces) is kept: the front
# ends then add nothing and say so; the nodes' dropped-frame check still tells when frames are lost.
USER_TRANSPORT_VARS = (*IMAGE_TRANSPORT_ENV, "FASTDDS_BUILTIN_TRANSPORTS")


class Sim(str, enum.Enum):
    EMBEDDED = "embedded"
    GAZEBO = "gazebo"
    ISAAC = "isaac"


@dataclass(frozen=True)
class SimBridge:
    """How the stack talks to a simulator: where commands go, in which message type, and where sensors arrive."""

    command_topic: str
    adapter: str  # the safety node's output adapter: joint_state | float64_multi_array | joint_trajectory
    joint_states_topic: str
    camera_topic: str


# The embedded simulator speaks all three command types, like ros2_control's controllers; Gazebo's
# gz_ros2_control exposes forward_position_controller (Float64MultiArray); Isaac Sim's ROS 2 bridge
# (the joint-state action graph) subscribes JointState on /joint_command and publishes /joint_states.
SIM_BRIDGES: Mapping[Sim, SimBridge] = {
    Sim.EMBEDDED: SimBridge("/joint_commands", "joint_state", "/joint_states", "/camera/image_raw"),
    Sim.GAZEBO: SimBridge(
        "/forward_position_controller/commands", "float64_multi_array", "/joint_states", "/camera/image_raw"
    ),
    Sim.ISAAC: SimBridge("/joint_command", "joint_state", "/joint_states", "/rgb"),
}


COMMON_ARGS = (
    Argument(
        "robot", "panda", "robot profile: commanded joints and their limits", tuple(ROBOT_COMMAND_JOINTS)
    ),
    Argument(
        "model", "", "policy checkpoint directory (sim: the shipped default when empty; robot: required)"
    ),
    Argument("log_level", "info", "ROS log level of every node", ("debug", "info", "warn", "error")),
)

PROFILE_ARGS: Mapping[str, tuple[Argument, ...]] = {
    "sim": (
        *COMMON_ARGS,
        Argument("sim", "embedded", "which simulator", tuple(s.value for s in Sim)),
        Argument("commander", "policy", "what commands the arm: the VLA policy or the scripted expert", ("policy", "expert")),
        Argument("task", "pick", "embedded sim: task family at start"),
        Argument("seed", "0", "embedded sim: scene seed at start"),
        Argument("split", "train", "embedded sim: instruction templates (heldout: evaluation paraphrases)", ("train", "heldout")),
        Argument("real_time_factor", "1.0", "embedded sim: simulated seconds per wall-clock second (below 1 where the machine cannot run the sim and the policy in real time)"),
        Argument("use_sim_time", "true", "all nodes on the simulator's /clock", ("true", "false")),
    ),
    "robot": (
        *COMMON_ARGS,
        Argument("camera_source", "pattern", "front camera: pattern (synthetic), a device index or path, a video file, an image directory, a stream URL"),
        Argument("use_sim_time", "false", "all nodes on /clock (replay)", ("true", "false")),
    ),
    "record": (
        *COMMON_ARGS,
        Argument("sim", "embedded", "simulator to record in ('none' on a real robot with a teleoperator)", ("embedded", "none")),
        Argument("task", "pick", "embedded sim: task family at start"),
        Argument("seed", "0", "embedded sim: scene seed at start"),
        Argument("dataset", "outputs/dataset", "LeRobot v3 dataset root episodes are appended to"),
        Argument("use_sim_time", "true", "all nodes on the simulator's /clock", ("true", "false")),
    ),
}  # fmt: skip

PROFILES = tuple(PROFILE_ARGS)


def resolve_arguments(profile: str, given: Mapping[str, str]) -> dict[str, str]:
    """Defaults merged with ``given``; unknown names and values outside ``choices`` are refused."""
    if profile not in PROFILE_ARGS:
        raise PlanError(f"unknown profile {profile!r}; choose one of {list(PROFILES)}")
    declared = {a.name: a for a in PROFILE_ARGS[profile]}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise PlanError(f"profile {profile!r} has no argument(s) {unknown}; it takes {sorted(declared)}")
    values = {name: a.default for name, a in declared.items()}
    values.update({k: str(v) for k, v in given.items()})
    for name, value in values.items():
        choices = declared[name].choices
        if choices and value not in choices:
            raise PlanError(f"{name}:={value!r} is not one of {list(choices)}")
    return values


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "true", "yes", "on")


def _common(args: Mapping[str, str]) -> dict[str, ParamValue]:
    return {"use_sim_time": _flag(args["use_sim_time"])}


def _safety(args: Mapping[str, str], bridge: SimBridge, *, heartbeat: bool = True) -> NodeSpec:
    params: dict[str, ParamValue] = {
        **_common(args),
        "robot_profile": args["robot"],
        "joints": list(ROBOT_COMMAND_JOINTS[args["robot"]]),
        "output_adapter": bridge.adapter,
        "output_topic": bridge.command_topic,
    }
    if not heartbeat:
        # The scripted expert sends no /policy/heartbeat; the command timeout still guards it.
        params["heartbeat_timeout"] = 0.0
    return NodeSpec(
        name="safety_node",
        package="vla_safety",
        executable="safety_node",
        param_files=(ParamFile("vla_safety", "config/safety_node.yaml"),),
        parameters=params,
        remappings=(("/joint_states", bridge.joint_states_topic),),
    )


def _policy(args: Mapping[str, str], bridge: SimBridge, model: str, cameras: Mapping[str, str]) -> NodeSpec:
    """``cameras``: the model's camera name -> image topic (empty: the node's defaults, one front camera)."""
    params: dict[str, ParamValue] = {**_common(args), "robot_profile": args["robot"]}
    if model:
        params["checkpoint"] = model
    if cameras:
        params["camera_names"] = list(cameras)
        params["camera_topics"] = list(cameras.values())
    return NodeSpec(
        name="policy_node",
        package="vla_policy",
        executable="policy_node",
        param_files=(ParamFile("vla_policy", "config/policy_node.yaml"),),
        parameters=params,
        remappings=(("/camera/image_raw", bridge.camera_topic), ("/joint_states", bridge.joint_states_topic)),
        # Not required: if the policy dies the safety monitor holds on the lost heartbeat. Stopping the plan
        # would take down the only path to the robot with it.
        required=False,
        images=True,
    )


def _resolve_model(args: Mapping[str, str], default_model: bool) -> str:
    """``model:=`` made absolute; without it and with ``default_model``, the shipped checkpoint (or "")."""
    model = args["model"]
    if not model and default_model:
        shipped = default_checkpoint()  # trained in the embedded sim, so only offered there
        model = str(shipped) if shipped is not None else ""
    return os.path.abspath(os.path.expanduser(model)) if model else ""


def model_cameras(model: str) -> list[tuple[str, int, int]]:
    """(name, width, height) of each camera a checkpoint's embodiment manifest declares ([] when unreadable:
    the policy node then reports what is wrong with the checkpoint itself)."""
    try:
        manifest = EmbodimentManifest.load(model)
    except ManifestError:
        return []
    return [(c.name, c.width, c.height) for c in manifest.cameras]


def _positive(args: Mapping[str, str], name: str, default: str) -> float:
    text = args.get(name, default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise PlanError(f"{name}:={text!r} must be a positive number")
    return value


def _embedded_sim(args: Mapping[str, str], cameras: Sequence[tuple[str, int, int]] = ()) -> NodeSpec:
    """``cameras``: what the policy sees; the simulator renders them at the size the policy was trained on."""
    params: dict[str, ParamValue] = {
        # the simulator owns /clock, so it never runs on sim time itself
        "task": args["task"],
        "seed": int(args["seed"]),
        "split": args.get("split", "train"),
        "real_time_factor": _positive(args, "real_time_factor", "1.0"),
        "publish_instruction": True,  # the sim announces its task on /task_instruction
    }
    names = {name for name, _, _ in cameras}
    if "wrist" in names:
        params["wrist_camera"] = True
    sizes = {(w, h) for _, w, h in cameras}
    if len(sizes) == 1:  # rendered at the training size: a resized 224x224 frame is not the same image
        ((params["camera_width"], params["camera_height"]),) = sizes
    return NodeSpec(name="sim_node", package="vla_sim", executable="sim_node", parameters=params, images=True)


def _expert(args: Mapping[str, str]) -> NodeSpec:
    # The expert is a teleoperator: its commands pass the safety monitor like the policy's do.
    return NodeSpec(
        name="expert_node",
        package="vla_sim",
        executable="expert_node",
        parameters=_common(args),
        remappings=(("/joint_commands", "/policy/joint_commands"),),
        required=False,  # like the policy: the safety monitor holds when its commander dies
    )


# The embedded simulator's image topics per camera name (vla_sim.sim_node's CAMERA_TOPICS).
EMBEDDED_CAMERA_TOPICS: Mapping[str, str] = {"front": "/camera/image_raw", "wrist": "/wrist_camera/image_raw"}


def build_sim(args: Mapping[str, str]) -> list[NodeSpec]:
    sim = Sim(args["sim"])
    bridge = SIM_BRIDGES[sim]
    expert = args["commander"] == "expert"
    model = "" if expert else _resolve_model(args, default_model=sim is Sim.EMBEDDED)
    cameras = model_cameras(model) if model and sim is Sim.EMBEDDED else []
    topics = {name: EMBEDDED_CAMERA_TOPICS[name] for name, _, _ in cameras if name in EMBEDDED_CAMERA_TOPICS}
    nodes = []
    if sim is Sim.EMBEDDED:
        nodes.append(_embedded_sim(args, cameras))
    nodes.append(_safety(args, bridge, heartbeat=not expert))
    if expert:
        if sim is not Sim.EMBEDDED:
            raise PlanError(
                "commander:=expert needs the embedded simulator (it reads the scene's object poses)"
            )
        nodes.append(_expert(args))
    else:
        nodes.append(_policy(args, bridge, model, topics if len(topics) == len(cameras) else {}))
    return nodes


def _camera_source(source: str) -> dict[str, ParamValue]:
    if source in ("", "pattern", "test_pattern"):
        return {"source_type": "pattern", "source": ""}
    return {"source_type": "auto", "source": source}


def build_robot(args: Mapping[str, str]) -> list[NodeSpec]:
    bridge = SimBridge("/joint_commands", "joint_state", "/joint_states", "/camera/image_raw")
    camera = NodeSpec(
        name="front_camera",  # its section in cameras.yaml
        package="vla_perception",
        executable="camera_node",
        param_files=(ParamFile("vla_perception", "config/cameras.yaml"),),
        parameters={**_common(args), **_camera_source(args["camera_source"])},
        images=True,
    )
    return [
        camera,
        _safety(args, bridge),
        _policy(args, bridge, _resolve_model(args, default_model=False), {}),
    ]


def build_record(args: Mapping[str, str]) -> list[NodeSpec]:
    bridge = SIM_BRIDGES[Sim.EMBEDDED]
    nodes = []
    if args["sim"] == "embedded":
        nodes += [_embedded_sim(args), _expert(args)]
    nodes.append(_safety(args, bridge, heartbeat=False))
    nodes.append(
        NodeSpec(
            name="collector_node",
            package="vla_collector",
            executable="collector_node",
            param_files=(ParamFile("vla_collector", "config/collector_node.yaml"),),
            parameters={
                **_common(args),
                "dataset_root": os.path.abspath(os.path.expanduser(args["dataset"])),
            },
            images=True,
        )
    )
    return nodes


BUILDERS: Mapping[str, Callable[[Mapping[str, str]], list[NodeSpec]]] = {
    "sim": build_sim,
    "robot": build_robot,
    "record": build_record,
}


def build_plan(profile: str, given: Mapping[str, str] | None = None) -> Plan:
    """The plan for ``profile`` with ``given`` launch arguments (``name -> value`` strings)."""
    args = resolve_arguments(profile, given or {})
    nodes = tuple(BUILDERS[profile](args))
    names = [n.name for n in nodes]
    if len(set(names)) != len(names):
        raise PlanError(f"plan {profile!r} has duplicate node names {names}")
    return Plan(profile=profile, arguments=args, nodes=nodes)
