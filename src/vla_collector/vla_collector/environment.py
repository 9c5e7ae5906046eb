"""``observation.environment_state`` from a simulator's scene description and object poses.

The embedded simulator (``vla_sim``'s ``sim_node``) publishes

* ``/sim/scene`` (``std_msgs/String``, JSON, reliable + transient local, after every reset): ``objects``, the
  name of each pose in ``/sim/object_poses``, in order, and ``referents``: ``names`` (the state's names, each
  ``<referent>.<axis>``, e.g. ``target.x`` .. ``goal.z``) and, per referent, ``{"object": name}`` (that
  object's current pose) or ``{"point": [x, y, z]}`` (a fixed point);
* ``/sim/object_poses`` (``geometry_msgs/PoseArray``): one pose per object, in the robot base frame (the base
  stands at the sim's world origin).

Which object is the target and which the goal is the task definition's decision
(``vla_sim.tasks.referents``, which also gives the env's and ``vla-dagger``'s state); the sim publishes the
decision and this module only looks the referents up in the poses. So ``vla_collector`` needs no ``vla_sim``
(its package dependencies stay as they were), live recording and offline conversion compute the same values
from the same two topics, and another simulator can offer the same feature by publishing the same two topics.

Pure Python: no rclpy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_collector.bag import deserialize

POSE_ARRAY_TYPE = "geometry_msgs/msg/PoseArray"
AXES = {"x": 0, "y": 1, "z": 2}


class EnvironmentStateError(ValueError):
    """A scene description or a pose array from which no environment state can be computed."""


@dataclass(frozen=True)
class EnvironmentSample:
    """One environment state: its names (from the scene description) and float32 values."""

    names: tuple[str, ...]
    values: np.ndarray


def parse_scene(text: str) -> dict[str, Any]:
    """A ``/sim/scene`` JSON text, checked for what :func:`environment_state` needs."""
    try:
        scene = json.loads(text)
    except json.JSONDecodeError as e:
        raise EnvironmentStateError(f"scene description is not JSON: {e}") from None
    if not isinstance(scene, dict) or not isinstance(scene.get("objects"), list):
        raise EnvironmentStateError("scene description lacks its 'objects' list")
    referents = scene.get("referents")
    if not isinstance(referents, dict) or not referents.get("names"):
        raise EnvironmentStateError(
            "scene description names no 'referents' (a simulator that does not publish them cannot give "
            "observation.environment_state)"
        )
    for name in referents["names"]:
        referent, _, axis = str(name).rpartition(".")
        spec = referents.get(referent)
        if axis not in AXES or not isinstance(spec, dict) or not ({"object", "point"} & set(spec)):
            raise EnvironmentStateError(f"scene referents: {name!r} is not <referent>.<x|y|z> of a referent")
        if "object" in spec and spec["object"] not in scene["objects"]:
            raise EnvironmentStateError(
                f"scene referent {referent!r} names an unknown object {spec['object']!r}"
            )
    return scene


def environment_state(scene: Mapping[str, Any], positions: Sequence[Sequence[float]]) -> EnvironmentSample:
    """The state the scene's referents name, read from ``positions`` (one (x, y, z) per scene object)."""
    objects = list(scene["objects"])
    if len(positions) != len(objects):
        raise EnvironmentStateError(
            f"{len(positions)} poses for {len(objects)} scene objects: poses and scene are from different episodes"
        )
    referents = scene["referents"]
    names = tuple(str(n) for n in referents["names"])
    values = []
    for name in names:
        referent, _, axis = name.rpartition(".")
        spec = referents[referent]
        where = spec["point"] if "point" in spec else positions[objects.index(spec["object"])]
        values.append(float(where[AXES[axis]]))
    state = np.asarray(values, dtype=np.float32)
    if not np.isfinite(state).all():
        raise EnvironmentStateError(f"environment state {state.tolist()} is not finite")
    return EnvironmentSample(names, state)


def pose_positions(cdr: bytes) -> list[tuple[float, float, float]]:
    """The positions of a CDR ``geometry_msgs/PoseArray``."""
    try:
        msg = deserialize(POSE_ARRAY_TYPE, cdr)
    except Exception as e:  # rosbags raises several types for bad CDR
        raise EnvironmentStateError(f"not a PoseArray: {e}") from None
    return [(float(p.position.x), float(p.position.y), float(p.position.z)) for p in msg.poses]
