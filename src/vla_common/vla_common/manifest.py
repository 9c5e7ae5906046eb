"""The embodiment manifest: what a dataset or a model was made for.

Shipped with every dataset (``meta/embodiment.json``) and every checkpoint (``embodiment.json``), it names the
joints and their order, units, the action type, the control rate, the cameras and the normalization
statistics with their hash. Whoever deploys a model checks it against the robot (``/joint_states``), the
safety configuration and the cameras before a single command is sent; a mismatch is refused with a clear
message instead of moving the robot with actions meant for another body (OpenVLA's ``unnorm_key`` problem).

Pure Python: no rclpy, no torch.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vla_common.atomic import write_json_atomic
from vla_common.features import image_key

MANIFEST_VERSION = 1
DATASET_MANIFEST_PATH = Path("meta") / "embodiment.json"
CHECKPOINT_MANIFEST_PATH = Path("embodiment.json")


class ManifestError(ValueError):
    """A manifest is malformed, or does not match what it is checked against."""


class ActionType(str, enum.Enum):
    """What the numbers of an action mean."""

    ABSOLUTE_JOINT_POSITION = "absolute_joint_position"
    JOINT_DELTA = "joint_delta"
    EE_DELTA = "ee_delta"


@dataclass(frozen=True)
class CameraSpec:
    """One camera as the model sees it: the name keys ``observation.images.<name>``."""

    name: str
    height: int
    width: int
    channels: int = 3

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or "." in self.name:
            raise ManifestError(f"camera name {self.name!r} must be non-empty without '/' or '.'")
        if self.height <= 0 or self.width <= 0 or self.channels not in (1, 3):
            raise ManifestError(f"camera {self.name!r}: bad shape {self.height}x{self.width}x{self.channels}")

    @property
    def feature_key(self) -> str:
        return image_key(self.name)


def stats_hash(stats: Mapping[str, Mapping[str, Any]]) -> str:
    """A stable sha256 of normalization statistics (canonical JSON, floats rounded to 1e-9)."""

    def canon(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): canon(v) for k, v in sorted(value.items())}
        if isinstance(value, (list, tuple)):
            return [canon(v) for v in value]
        if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
            return canon(value.tolist())
        if isinstance(value, float):
            return round(value, 9)
        return value

    blob = json.dumps(canon(stats), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class EmbodimentManifest:
    """The contract between a robot, its datasets and the models trained on them.

    ``joint_names`` orders ``observation.state``; ``action_names`` orders ``action`` (for joint actions
    the same joints, for end-effector deltas e.g. ``x, y, z, roll, pitch, yaw, gripper``).
    ``normalization`` maps a feature (``observation.state``, ``action``) to statistics
    (``mean``, ``std``, ``min``, ``max``, ... as lists); ``normalization_hash`` is recomputed on load and
    must match, so statistics cannot be swapped silently.
    """

    robot_type: str
    joint_names: tuple[str, ...]
    action_names: tuple[str, ...]
    action_type: ActionType
    fps: float
    cameras: tuple[CameraSpec, ...] = ()
    joint_units: tuple[str, ...] = ()
    normalization: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    normalization_hash: str = ""
    version: int = MANIFEST_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "joint_names", tuple(self.joint_names))
        object.__setattr__(self, "action_names", tuple(self.action_names))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "action_type", ActionType(self.action_type))
        if not self.joint_units:
            object.__setattr__(self, "joint_units", tuple("rad" for _ in self.joint_names))
        object.__setattr__(self, "joint_units", tuple(self.joint_units))
        if self.version != MANIFEST_VERSION:
            raise ManifestError(f"manifest version {self.version} is not supported (want {MANIFEST_VERSION})")
        if not self.robot_type:
            raise ManifestError("robot_type must be set")
        for label, names in (("joint_names", self.joint_names), ("action_names", self.action_names)):
            if not names:
                raise ManifestError(f"{label} must not be empty")
            if len(set(names)) != len(names):
                raise ManifestError(f"{label} has duplicates: {list(names)}")
        if len(self.joint_units) != len(self.joint_names):
            raise ManifestError(
                f"joint_units has {len(self.joint_units)} entries for {len(self.joint_names)} joints"
            )
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ManifestError(f"fps must be a positive finite number, got {self.fps}")
        camera_names = [c.name for c in self.cameras]
        if len(set(camera_names)) != len(camera_names):
            raise ManifestError(f"camera names must be unique: {camera_names}")
        expected = stats_hash(self.normalization) if self.normalization else ""
        if self.normalization_hash and self.normalization_hash != expected:
            raise ManifestError(
                "normalization statistics do not match their hash: the statistics were edited or swapped"
            )
        object.__setattr__(self, "normalization_hash", expected)

    # --- checks against the world -------------------------------------------------------------------

    def check_joint_state(self, names: Sequence[str]) -> None:
        """Raise unless every manifest joint is present in a ``/joint_states`` name list."""
        missing = [n for n in self.joint_names if n not in set(names)]
        if missing:
            raise ManifestError(
                f"/joint_states lacks joints the model was trained on: {missing} (robot publishes {list(names)})"
            )

    def check_joints_limited(self, limited_joints: Iterable[str]) -> None:
        """Raise unless the safety configuration has limits for every commanded joint."""
        if (
            self.action_type is not ActionType.ABSOLUTE_JOINT_POSITION
            and self.action_type is not ActionType.JOINT_DELTA
        ):
            raise ManifestError(
                f"action type {self.action_type.value} cannot be sent to a joint-space safety monitor"
            )
        limited = set(limited_joints)
        missing = [n for n in self.action_names if n not in limited]
        if missing:
            raise ManifestError(f"the safety configuration has no limits for commanded joints {missing}")

    def check_cameras(self, available: Iterable[str]) -> None:
        """Raise unless every camera the model needs is configured."""
        have = set(available)
        missing = [c.name for c in self.cameras if c.name not in have]
        if missing:
            raise ManifestError(
                f"cameras {missing} are required by the model but not configured ({sorted(have)})"
            )

    def mismatches(self, other: EmbodimentManifest) -> list[str]:
        """Human-readable differences that make ``other`` (e.g. a dataset) unusable with ``self``."""
        problems = []
        if self.joint_names != other.joint_names:
            problems.append(f"joint order {list(self.joint_names)} != {list(other.joint_names)}")
        if self.action_names != other.action_names:
            problems.append(f"action names {list(self.action_names)} != {list(other.action_names)}")
        if self.action_type != other.action_type:
            problems.append(f"action type {self.action_type.value} != {other.action_type.value}")
        if self.joint_units != other.joint_units:
            problems.append(f"units {list(self.joint_units)} != {list(other.joint_units)}")
        if not math.isclose(self.fps, other.fps, rel_tol=1e-6):
            problems.append(f"fps {self.fps} != {other.fps}")
        mine = {c.name for c in self.cameras}
        theirs = {c.name for c in other.cameras}
        if not mine <= theirs:
            problems.append(f"cameras {sorted(mine - theirs)} missing")
        return problems

    # --- (de)serialization -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "robot_type": self.robot_type,
            "joint_names": list(self.joint_names),
            "joint_units": list(self.joint_units),
            "action_names": list(self.action_names),
            "action_type": self.action_type.value,
            "fps": self.fps,
            "cameras": [
                {"name": c.name, "height": c.height, "width": c.width, "channels": c.channels}
                for c in self.cameras
            ],
            "normalization": _jsonable(self.normalization),
            "normalization_hash": self.normalization_hash,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EmbodimentManifest:
        known = {
            "version", "robot_type", "joint_names", "joint_units", "action_names", "action_type", "fps",
            "cameras", "normalization", "normalization_hash",
        }  # fmt: skip
        unknown = set(data) - known
        if unknown:
            raise ManifestError(f"unknown manifest fields {sorted(unknown)}")
        try:
            return cls(
                version=int(data.get("version", MANIFEST_VERSION)),
                robot_type=str(data["robot_type"]),
                joint_names=tuple(data["joint_names"]),
                joint_units=tuple(data.get("joint_units", ())),
                action_names=tuple(data["action_names"]),
                action_type=ActionType(data["action_type"]),
                fps=float(data["fps"]),
                cameras=tuple(CameraSpec(**c) for c in data.get("cameras", ())),
                normalization=data.get("normalization", {}),
                normalization_hash=str(data.get("normalization_hash", "")),
            )
        except KeyError as e:
            raise ManifestError(f"manifest lacks required field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, ManifestError):
                raise
            raise ManifestError(f"malformed manifest: {e}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file, fsync, rename) so a crash never leaves half a manifest."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EmbodimentManifest:
        """Load from a manifest file, a dataset root (``meta/embodiment.json``) or a checkpoint directory."""
        p = Path(path)
        if p.is_dir():
            for candidate in (p / DATASET_MANIFEST_PATH, p / CHECKPOINT_MANIFEST_PATH):
                if candidate.is_file():
                    p = candidate
                    break
            else:
                raise ManifestError(
                    f"no embodiment manifest in {path} (looked for {DATASET_MANIFEST_PATH} and {CHECKPOINT_MANIFEST_PATH})"
                )
        try:
            data = json.loads(p.read_text())
        except FileNotFoundError:
            raise ManifestError(f"manifest {p} does not exist") from None
        except json.JSONDecodeError as e:
            raise ManifestError(f"manifest {p} is not valid JSON: {e}") from None
        return cls.from_dict(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
