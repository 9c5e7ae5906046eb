"""Fake-input factories: the CDR bytes a camera, a robot and a teleoperator would publish.

Messages are serialized with rosbags' Jazzy type store (byte-identical to rclpy's CDR), so the recorder
core is exercised with exactly what it receives from a raw subscription.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from vla_collector.bag import message_class, serialize

JOINTS = (*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1")
ALL_JOINTS = (*JOINTS, "panda_finger_joint2")
H, W = 48, 64

_Time = message_class("builtin_interfaces/msg/Time")
_Header = message_class("std_msgs/msg/Header")
_Image = message_class("sensor_msgs/msg/Image")
_JointState = message_class("sensor_msgs/msg/JointState")
_String = message_class("std_msgs/msg/String")
_Pose = message_class("geometry_msgs/msg/Pose")
_Point = message_class("geometry_msgs/msg/Point")
_Quaternion = message_class("geometry_msgs/msg/Quaternion")
_PoseArray = message_class("geometry_msgs/msg/PoseArray")

# A simulator's scene, as vla_sim's sim_node describes it: the red block (the target) slides along x towards
# the blue one (the goal); the bowl stands still.
OBJECTS = ("red", "blue", "bowl")
ENV_NAMES = ("target.x", "target.y", "target.z", "goal.x", "goal.y", "goal.z")


def header(ns: int) -> object:
    return _Header(stamp=_Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="")


def image(ns: int, index: int, h: int = H, w: int = W) -> bytes:
    """rgb8 frame whose red channel encodes the image index (3 * index mod 256)."""
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[..., 0] = (3 * index) % 256
    pixels[:8, :8, 2] = 255
    return serialize("sensor_msgs/msg/Image", _Image(header(ns), h, w, "rgb8", 0, w * 3, pixels.reshape(-1)))


def state_at(t_s: float) -> np.ndarray:
    return np.array([0.1 * t_s + 0.01 * i for i in range(8)])


def joint_state(ns: int, t_s: float) -> bytes:
    pos = state_at(t_s)
    values = np.r_[pos, pos[-1]]  # the simulator mirrors the finger
    return serialize(
        "sensor_msgs/msg/JointState",
        _JointState(header(ns), list(ALL_JOINTS), values, np.zeros(9), np.zeros(0)),
    )


def command(ns: int, t_s: float) -> bytes:
    """The action sent: the state one second ahead (so it differs from the state)."""
    return serialize(
        "sensor_msgs/msg/JointState",
        _JointState(header(ns), list(JOINTS), state_at(t_s) + 1.0, np.zeros(0), np.zeros(0)),
    )


def instruction(text: str) -> bytes:
    return serialize("std_msgs/msg/String", _String(text))


def object_positions(t_s: float) -> list[tuple[float, float, float]]:
    return [(0.4 + 0.1 * t_s, 0.0, 0.02), (0.6, 0.1, 0.02), (0.5, -0.2, 0.005)]


def environment_at(t_s: float) -> np.ndarray:
    """The environment state the scene below gives at ``t_s``: the red block, then the blue one."""
    red, blue, _ = object_positions(t_s)
    return np.array([*red, *blue], dtype=np.float32)


def pose_array(ns: int, positions: list[tuple[float, float, float]]) -> bytes:
    poses = [_Pose(_Point(*map(float, p)), _Quaternion(0.0, 0.0, 0.0, 1.0)) for p in positions]
    return serialize("geometry_msgs/msg/PoseArray", _PoseArray(header(ns), poses))


def scene_description(episode: int = 1) -> dict:
    return {
        "episode": episode,
        "instruction": "put the red block on the blue block",
        "objects": list(OBJECTS),
        "referents": {"names": list(ENV_NAMES), "target": {"object": "red"}, "goal": {"object": "blue"}},
    }


def scene(episode: int = 1) -> bytes:
    """The /sim/scene message (std_msgs/String JSON)."""
    return instruction(json.dumps(scene_description(episode)))


@dataclass(frozen=True)
class Event:
    t_ns: int
    topic: str
    data: bytes


def streams(
    t0_ns: int,
    seconds: float,
    cam_hz: float = 30.0,
    joint_hz: float = 100.0,
    camera_pause: tuple[float, float] | None = None,
    cameras: dict[str, str] | None = None,
    poses_hz: float = 0.0,
) -> Iterator[Event]:
    """Camera(s), /joint_states and /joint_commands (and, with ``poses_hz``, /sim/object_poses), merged in
    time order."""
    cameras = cameras or {"front": "/camera/image_raw"}
    events: list[tuple[int, int, str, bytes]] = []
    for topic in cameras.values():
        for k in range(int(seconds * cam_hz)):
            t = k / cam_hz
            if camera_pause and camera_pause[0] <= t < camera_pause[1]:
                continue
            ns = t0_ns + int(t * 1e9)
            events.append((ns, 0, topic, image(ns, k)))
    for k in range(int(seconds * joint_hz)):
        t = k / joint_hz
        ns = t0_ns + int(t * 1e9)
        events.append((ns, 1, "/joint_states", joint_state(ns, t)))
        events.append((ns, 2, "/joint_commands", command(ns, t)))
    for k in range(int(seconds * poses_hz)):
        t = k / poses_hz
        ns = t0_ns + int(t * 1e9)
        events.append((ns, 3, "/sim/object_poses", pose_array(ns, object_positions(t))))
    for ns, _, topic, data in sorted(events, key=lambda e: (e[0], e[1])):
        yield Event(ns, topic, data)
