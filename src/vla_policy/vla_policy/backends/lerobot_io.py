"""Our observations and action chunks <-> a LeRobot policy's features. Pure: numpy and OpenCV, no torch, no
LeRobot, so it is tested in the main venv; :mod:`vla_policy.backends.lerobot` wires it to LeRobot.

A LeRobot policy's ``config.json`` names its inputs and outputs by feature key, type and shape, but not the
joints: those, their units, the action order, the control rate and the cameras come from our embodiment
manifest (the dataset's ``meta/embodiment.json``). :func:`plan_io` checks that the two fit and refuses, naming
the mismatch, when they do not:

* ``observation.state`` (STATE): one value per manifest joint, in the manifest's order;
* ``observation.images.<camera>`` (VISUAL): a camera of the manifest, 3 channels (resized when the camera's
  frames are not the policy's size);
* ``action`` (ACTION): one value per manifest action name;
* nothing else the robot cannot give (``observation.environment_state`` is simulator ground truth);
* one observation at a time (``n_obs_steps`` 1): the node sends one per chunk it asks for, not a history of
  consecutive frames (Diffusion Policy's default ``n_obs_steps=2`` is refused: train with 1).

Units: the node speaks SI (``/joint_states``: rad, m). A manifest in other units (``deg``, ``mm``) is the
policy's: states are converted to them on the way in and actions back to SI on the way out, and the manifest
served to the node says SI. The instruction goes in as LeRobot's ``task``. Chunks carry the observation's
``timestamp`` (the node's clock, sim time included); an observation without one is refused.

Every chunk is checked before it leaves: a policy that answers NaN or the wrong number of values raises
(``ValueError``), so the node gets an error instead of a chunk and holds, and the safety monitor with it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from vla_common.features import ACTION_KEY, IMAGE_PREFIX, STATE_KEY
from vla_common.manifest import CameraSpec, EmbodimentManifest, ManifestError
from vla_common.policy import ActionChunk, Observation

# LeRobot's FeatureType values (lerobot.configs.types), as strings so this module needs no LeRobot.
VISUAL, STATE, ENV, ACTION, LANGUAGE = "VISUAL", "STATE", "ENV", "ACTION", "LANGUAGE"

# unit -> (the SI unit the node speaks, SI value of one unit)
UNITS: Mapping[str, tuple[str, float]] = {
    "rad": ("rad", 1.0),
    "deg": ("rad", math.pi / 180.0),
    "m": ("m", 1.0),
    "mm": ("m", 1e-3),
}


class LeRobotFeatureError(ManifestError):
    """A LeRobot policy whose features do not fit the embodiment manifest."""


@dataclass(frozen=True)
class Feature:
    """One of a LeRobot policy's ``input_features`` / ``output_features``."""

    key: str
    type: str  # VISUAL, STATE, ENV, ACTION, ...
    shape: tuple[int, ...]


def features_from_config(entries: Mapping[str, Any]) -> tuple[Feature, ...]:
    """Features from ``config.json``'s ``{"key": {"type": "VISUAL", "shape": [3, 96, 96]}}`` (or LeRobot's
    ``PolicyFeature`` objects, whose ``type`` is a str enum)."""
    out = []
    for key, value in entries.items():
        kind = value["type"] if isinstance(value, Mapping) else value.type
        shape = value["shape"] if isinstance(value, Mapping) else value.shape
        out.append(Feature(str(key), str(getattr(kind, "value", kind)), tuple(int(s) for s in shape)))
    return tuple(out)


@dataclass(frozen=True)
class LeRobotIO:
    """How one policy's features map onto one manifest: built by :func:`plan_io`, never by hand."""

    manifest: EmbodimentManifest  # what the node is served: SI units, the cameras the policy reads
    state_key: str | None  # the policy's state feature after renaming (None: the policy reads no state)
    cameras: tuple[tuple[str, str, int, int], ...]  # (camera, policy key, height, width)
    state_scale: np.ndarray  # [J] SI value of one policy unit, per manifest joint
    action_scale: np.ndarray  # [D] SI value of one policy unit, per action name
    actions_per_chunk: int  # 0: the whole chunk the policy predicts

    @property
    def action_dim(self) -> int:
        return len(self.manifest.action_names)

    def inputs(self, observation: Observation) -> dict[str, Any]:
        """The policy's raw batch (before its preprocessor): ``[1, 3, H, W]`` float32 images in [0, 1],
        ``[1, J]`` float32 state in the policy's units, ``task`` and ``robot_type`` strings."""
        batch: dict[str, Any] = {}
        for camera, key, height, width in self.cameras:
            frame = observation.get(IMAGE_PREFIX + camera)
            if frame is None:
                raise ValueError(f"the observation has no image from camera {camera!r}")
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                raise ValueError(
                    f"camera {camera!r}: expected HxWx3 uint8 RGB, got {frame.dtype} {frame.shape}"
                )
            if frame.shape[:2] != (height, width):
                shrink = frame.shape[0] > height or frame.shape[1] > width
                frame = cv2.resize(
                    frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
                )
            chw = np.ascontiguousarray(frame.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
            batch[key] = chw[None]
        if self.state_key is not None:
            if STATE_KEY not in observation:
                raise ValueError(f"the observation has no {STATE_KEY}")
            state = np.asarray(observation[STATE_KEY], dtype=np.float64).reshape(-1)
            if state.shape != self.state_scale.shape:
                raise ValueError(
                    f"{STATE_KEY} has {state.size} values, the manifest names {self.state_scale.size} joints"
                )
            if not np.all(np.isfinite(state)):
                raise ValueError(f"{STATE_KEY} holds NaN or inf")
            batch[self.state_key] = (state / self.state_scale).astype(np.float32)[None]
        batch["task"] = str(observation.get("task", ""))
        batch["robot_type"] = self.manifest.robot_type
        return batch

    def chunk(self, actions: Any, stamp: float) -> ActionChunk:
        """The policy's un-normalized actions (``[H, D]`` or ``[1, H, D]``, its units) as a checked
        :class:`ActionChunk` in SI units, stamped with the observation's time. Raises ``ValueError`` naming
        what is wrong: the wrong number of values, NaN or inf."""
        array = np.asarray(actions, dtype=np.float64)
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if array.ndim == 1:
            array = array[None]
        if array.ndim != 2 or array.shape[0] < 1:
            raise ValueError(f"the LeRobot policy answered actions of shape {array.shape}, not [H, D]")
        if array.shape[1] != self.action_dim:
            raise ValueError(
                f"the LeRobot policy answered actions of size {array.shape[1]}, the manifest has "
                f"{self.action_dim} action names {list(self.manifest.action_names)}: refused"
            )
        if self.actions_per_chunk:
            array = array[: self.actions_per_chunk]
        bad = ~np.isfinite(array)
        if bad.any():
            steps, dims = np.nonzero(bad)
            names = sorted({self.manifest.action_names[d] for d in dims})
            raise ValueError(
                f"the LeRobot policy answered NaN or inf ({int(bad.sum())} values, steps {steps.min()}.."
                f"{steps.max()}, joints {names}): refused"
            )
        return ActionChunk(
            array * self.action_scale, self.manifest.action_names, stamp, 1.0 / self.manifest.fps
        )


def plan_io(
    manifest: EmbodimentManifest,
    inputs: Sequence[Feature],
    outputs: Sequence[Feature],
    *,
    rename_map: Mapping[str, str] | None = None,
    actions_per_chunk: int = 0,
    n_obs_steps: int = 1,
) -> LeRobotIO:
    """Check a policy's features against ``manifest`` and plan the mapping; raise :class:`LeRobotFeatureError`
    naming every mismatch. ``rename_map``: the policy preprocessor's own renaming (our key -> policy key).
    ``n_obs_steps``: how many consecutive observations the policy reads (its config's; only 1 is served)."""
    if actions_per_chunk < 0:
        raise ValueError(f"actions_per_chunk must be >= 0, got {actions_per_chunk}")
    if n_obs_steps != 1:
        raise LeRobotFeatureError(
            f"the LeRobot policy reads n_obs_steps={n_obs_steps} consecutive observations, "
            f"{1.0 / manifest.fps:.3g} s apart, but policy_node sends one observation per chunk it asks for "
            "(seconds apart, when its queue runs low), so the history the policy was trained on does not exist "
            "here: refused (train it with --policy.n_obs_steps=1)"
        )
    problems: list[str] = []
    state_key, cameras = _plan_inputs(manifest, inputs, rename_map or {}, problems)
    _check_action(manifest, outputs, problems)
    if not cameras:
        problems.append("the policy reads no camera of the manifest")
    si_units, scales = _si_units(manifest, problems)
    if problems:
        raise LeRobotFeatureError(
            "the LeRobot policy does not fit the embodiment manifest: " + "; ".join(problems)
        )
    scale_of = dict(zip(manifest.joint_names, scales, strict=True))
    unconverted = [n for n in manifest.action_names if n not in scale_of]
    if unconverted and any(s != 1.0 for s in scales):
        raise LeRobotFeatureError(
            f"actions {unconverted} are not joints of the manifest, so their units cannot be converted"
        )
    by_name = {c.name: c for c in manifest.cameras}
    served = dataclasses.replace(
        manifest,
        joint_units=tuple(si_units),
        cameras=tuple(
            CameraSpec(camera, height, width, by_name[camera].channels)
            for camera, _, height, width in cameras
        ),
        normalization={},  # LeRobot's statistics live in its processor files, in the policy's units
        normalization_hash="",
    )
    return LeRobotIO(
        manifest=served,
        state_key=state_key,
        cameras=tuple(cameras),
        state_scale=np.array(scales, np.float64),
        action_scale=np.array([scale_of.get(n, 1.0) for n in manifest.action_names], np.float64),
        actions_per_chunk=actions_per_chunk,
    )


def _plan_inputs(
    manifest: EmbodimentManifest,
    inputs: Sequence[Feature],
    rename_map: Mapping[str, str],
    problems: list[str],
) -> tuple[str | None, list[tuple[str, str, int, int]]]:
    """The policy's state key and its cameras ``(camera, policy key, height, width)``; what has no source on
    the robot goes to ``problems``."""
    ours_for = {rename_map.get(key, key): key for key in _our_keys(manifest)}  # policy key -> our key
    by_name = {c.name: c for c in manifest.cameras}
    state_key: str | None = None
    cameras: list[tuple[str, str, int, int]] = []
    for feature in inputs:
        ours = ours_for.get(feature.key, feature.key)
        if feature.type == STATE:
            if ours != STATE_KEY:
                problems.append(
                    f"state input {feature.key!r} has no source on the robot (it sends {STATE_KEY})"
                )
            elif feature.shape != (len(manifest.joint_names),):
                problems.append(
                    f"{feature.key} has shape {list(feature.shape)}, the manifest has "
                    f"{len(manifest.joint_names)} joints {list(manifest.joint_names)}"
                )
            else:
                state_key = feature.key
        elif feature.type == VISUAL:
            camera = ours[len(IMAGE_PREFIX) :] if ours.startswith(IMAGE_PREFIX) else ""
            if camera not in by_name:
                problems.append(
                    f"image input {feature.key!r} is not a camera of the manifest "
                    f"(cameras: {[IMAGE_PREFIX + n for n in by_name]})"
                )
            elif len(feature.shape) != 3 or feature.shape[0] != 3:
                problems.append(f"image input {feature.key} has shape {list(feature.shape)}, not [3, H, W]")
            else:
                cameras.append((camera, feature.key, feature.shape[1], feature.shape[2]))
        elif feature.type != LANGUAGE:  # language is made from ``task`` by the policy's own preprocessor
            problems.append(
                f"input {feature.key!r} ({feature.type}) has no source on the robot: policy_node sends "
                f"{STATE_KEY}, the manifest's cameras and the instruction (train without it)"
            )
    return state_key, cameras


def _check_action(manifest: EmbodimentManifest, outputs: Sequence[Feature], problems: list[str]) -> None:
    """One ``action`` output, one value per manifest action name."""
    actions = [f for f in outputs if f.type == ACTION]
    if [f.key for f in actions] != [ACTION_KEY]:
        problems.append(
            f"the policy must output one {ACTION_KEY!r} feature, it outputs {[f.key for f in outputs]}"
        )
    elif actions[0].shape != (len(manifest.action_names),):
        problems.append(
            f"{ACTION_KEY} has shape {list(actions[0].shape)}, the manifest has "
            f"{len(manifest.action_names)} action names {list(manifest.action_names)}"
        )


def _si_units(manifest: EmbodimentManifest, problems: list[str]) -> tuple[list[str], list[float]]:
    """Per manifest joint: the SI unit the node speaks and the SI value of one of the manifest's units."""
    si_units, scales = [], []
    for joint, unit in zip(manifest.joint_names, manifest.joint_units, strict=True):
        if unit not in UNITS:
            problems.append(f"joint {joint} is in {unit!r}, which has no conversion to SI ({sorted(UNITS)})")
            continue
        si_units.append(UNITS[unit][0])
        scales.append(UNITS[unit][1])
    return si_units, scales


def _our_keys(manifest: EmbodimentManifest) -> list[str]:
    return [STATE_KEY, *(c.feature_key for c in manifest.cameras)]


class LeRobotPolicy:
    """A :class:`~vla_common.policy.Policy` around a LeRobot policy: ``run`` takes :meth:`LeRobotIO.inputs`'
    batch through the policy's preprocessor, model and postprocessor and returns its actions (numpy,
    ``[1, H, D]``); ``reset_policy`` forgets episode state. Both are LeRobot's, given by the loader."""

    def __init__(
        self,
        io: LeRobotIO,
        run: Callable[[dict[str, Any]], np.ndarray],
        reset_policy: Callable[[], None],
        description: str = "LeRobot policy",
    ) -> None:
        self.io = io
        self.manifest = io.manifest
        self.description = description
        self._run = run
        self._reset = reset_policy

    def reset(self) -> None:
        self._reset()

    def infer(self, observation: Observation) -> ActionChunk:
        stamp = observation.get("timestamp")
        if stamp is None or not math.isfinite(float(stamp)):
            # policy_node always sends when its observation was seen (sim time under use_sim_time); this
            # server's clock would time the chunk wrongly, so the node would play it at the wrong moment.
            raise ValueError(
                f"the observation has no timestamp (got {stamp!r}): the chunk is stamped with when its "
                "observation was taken, which only the client knows"
            )
        return self.io.chunk(self._run(self.io.inputs(observation)), float(stamp))
