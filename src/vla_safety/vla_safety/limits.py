"""Joint limits: one record per joint, loaded from URDF and/or YAML robot profiles, merged most-restrictive-wins.

Pure Python (no rclpy). Units are the joint's own: rad, rad/s, rad/s^2 for revolute joints; m, m/s, m/s^2 for
prismatic ones. A limit that is not known is ``None`` (acceleration, jerk, effort) or infinite (position of a
continuous joint); :func:`check_armable` refuses any commanded joint without finite position and velocity limits.
"""

from __future__ import annotations

import contextlib
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "vla_safety"
PROFILE_DIR = Path("config") / "robots"


class LimitsError(ValueError):
    """Limits are missing, malformed, contradictory, or would let a commanded joint move unbounded."""


def _optional_positive(name: str, field_name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0.0):
        raise LimitsError(
            f"joint {name!r}: {field_name} must be a positive finite number or unset, got {value}"
        )


@dataclass(frozen=True)
class JointLimits:
    """Limits of one joint. ``lower``/``upper`` are the enforced bounds: the hard range shrunk by the margin."""

    name: str
    min_position: float
    max_position: float
    max_velocity: float
    max_acceleration: float | None = None
    max_jerk: float | None = None
    max_effort: float | None = None
    position_margin: float = 0.0

    def __post_init__(self) -> None:
        if not self.name:
            raise LimitsError("a joint limit needs a joint name")
        for field_name in ("min_position", "max_position", "max_velocity", "position_margin"):
            value = getattr(self, field_name)
            if not isinstance(value, (int, float)) or math.isnan(value):
                raise LimitsError(f"joint {self.name!r}: {field_name} must be a number, got {value!r}")
        if not self.min_position < self.max_position:
            raise LimitsError(
                f"joint {self.name!r}: min_position {self.min_position} must be below max_position {self.max_position}"
            )
        if not self.max_velocity > 0.0:
            raise LimitsError(f"joint {self.name!r}: max_velocity must be positive, got {self.max_velocity}")
        _optional_positive(self.name, "max_acceleration", self.max_acceleration)
        _optional_positive(self.name, "max_jerk", self.max_jerk)
        _optional_positive(self.name, "max_effort", self.max_effort)
        if not (math.isfinite(self.position_margin) and self.position_margin >= 0.0):
            raise LimitsError(
                f"joint {self.name!r}: position_margin must be >= 0, got {self.position_margin}"
            )
        if self.has_finite_position and 2.0 * self.position_margin >= self.max_position - self.min_position:
            raise LimitsError(
                f"joint {self.name!r}: position_margin {self.position_margin} leaves no room in "
                f"[{self.min_position}, {self.max_position}]"
            )

    @property
    def lower(self) -> float:
        return self.min_position + self.position_margin

    @property
    def upper(self) -> float:
        return self.max_position - self.position_margin

    @property
    def has_finite_position(self) -> bool:
        return math.isfinite(self.min_position) and math.isfinite(self.max_position)

    @property
    def armable(self) -> bool:
        """Finite position and velocity limits with min < max: the minimum the monitor needs to move a joint."""
        return self.has_finite_position and math.isfinite(self.max_velocity)

    def merged(self, other: JointLimits) -> JointLimits:
        """The most restrictive of both: the tighter range, the lower rates, the larger margin."""
        if other.name != self.name:
            raise LimitsError(f"cannot merge limits of {self.name!r} with {other.name!r}")

        def tighter(a: float | None, b: float | None) -> float | None:
            if a is None:
                return b
            if b is None:
                return a
            return min(a, b)

        lo = max(self.min_position, other.min_position)
        hi = min(self.max_position, other.max_position)
        if not lo < hi:
            raise LimitsError(
                f"joint {self.name!r}: sources disagree, their ranges do not overlap "
                f"([{self.min_position}, {self.max_position}] and [{other.min_position}, {other.max_position}])"
            )
        return JointLimits(
            name=self.name,
            min_position=lo,
            max_position=hi,
            max_velocity=min(self.max_velocity, other.max_velocity),
            max_acceleration=tighter(self.max_acceleration, other.max_acceleration),
            max_jerk=tighter(self.max_jerk, other.max_jerk),
            max_effort=tighter(self.max_effort, other.max_effort),
            position_margin=max(self.position_margin, other.position_margin),
        )


LimitTable = Mapping[str, JointLimits]


def merge_limits(*tables: LimitTable) -> dict[str, JointLimits]:
    """Union of the tables; a joint present in several gets the most restrictive of each limit."""
    out: dict[str, JointLimits] = {}
    for table in tables:
        for name, lim in table.items():
            out[name] = out[name].merged(lim) if name in out else lim
    return out


def check_armable(table: LimitTable, commanded_joints: Sequence[str]) -> None:
    """Raise :class:`LimitsError` unless every commanded joint has finite position and velocity limits."""
    if not commanded_joints:
        raise LimitsError("no commanded joints: the monitor has nothing to guard")
    if len(set(commanded_joints)) != len(commanded_joints):
        raise LimitsError(f"commanded joints contain duplicates: {list(commanded_joints)}")
    missing = [n for n in commanded_joints if n not in table]
    if missing:
        raise LimitsError(f"no limits for commanded joints {missing} (limited: {sorted(table)})")
    unbounded = [n for n in commanded_joints if not table[n].armable]
    if unbounded:
        raise LimitsError(f"commanded joints {unbounded} lack finite position and velocity limits")


# --- URDF -------------------------------------------------------------------------------------------------


def _float_attr(elem: ET.Element, attr: str, joint: str) -> float | None:
    raw = elem.get(attr)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise LimitsError(f"URDF joint {joint!r}: {attr}={raw!r} is not a number") from None
    if math.isnan(value):
        raise LimitsError(f"URDF joint {joint!r}: {attr} is NaN")
    return value


def parse_urdf_limits(urdf_xml: str) -> dict[str, JointLimits]:
    """Limits of every revolute, prismatic and continuous joint that has a ``<limit>`` with a velocity.

    ``<safety_controller soft_lower_limit/soft_upper_limit>`` tightens the range when present (the vendor's
    software limits, e.g. Franka's); continuous joints get an infinite range (so they cannot be armed).
    Mimic joints are included: they are limited, though never commanded directly.
    """
    try:
        root = ET.fromstring(urdf_xml)
    except ET.ParseError as e:
        raise LimitsError(f"URDF is not valid XML: {e}") from None
    if root.tag != "robot":
        raise LimitsError(f"URDF root element is <{root.tag}>, expected <robot>")
    out: dict[str, JointLimits] = {}
    for joint in root.iter("joint"):
        name = joint.get("name", "")
        kind = joint.get("type", "")
        if kind not in ("revolute", "prismatic", "continuous"):
            continue
        limit = joint.find("limit")
        if limit is None:
            continue  # not limited: check_armable refuses it if it is commanded
        velocity = _float_attr(limit, "velocity", name)
        if velocity is None or velocity <= 0.0:
            continue  # URDF velocity=0 means "unspecified"
        lower = _float_attr(limit, "lower", name) if kind != "continuous" else None
        upper = _float_attr(limit, "upper", name) if kind != "continuous" else None
        lo = -math.inf if lower is None else lower
        hi = math.inf if upper is None else upper
        soft = joint.find("safety_controller")
        if soft is not None:
            soft_lo = _float_attr(soft, "soft_lower_limit", name)
            soft_hi = _float_attr(soft, "soft_upper_limit", name)
            lo = lo if soft_lo is None else max(lo, soft_lo)
            hi = hi if soft_hi is None else min(hi, soft_hi)
        effort = _float_attr(limit, "effort", name)
        out[name] = JointLimits(
            name=name,
            min_position=lo,
            max_position=hi,
            max_velocity=velocity,
            max_effort=effort if effort is not None and effort > 0.0 else None,
        )
    return out


def load_urdf_limits(path: str | os.PathLike[str]) -> dict[str, JointLimits]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise LimitsError(f"cannot read URDF {p}: {e}") from None
    return parse_urdf_limits(text)


# --- YAML robot profiles ------------------------------------------------------------------------------------

_JOINT_KEYS = {f.name for f in fields(JointLimits)} - {"name"}


def parse_profile(data: Mapping[str, Any], origin: str = "<profile>") -> dict[str, JointLimits]:
    """A profile: ``{robot: str, source: str, defaults: {...}, joints: {name: {min_position: ..., ...}}}``."""
    if not isinstance(data, Mapping):
        raise LimitsError(f"{origin}: a robot profile must be a mapping")
    unknown = set(data) - {"robot", "source", "defaults", "joints"}
    if unknown:
        raise LimitsError(f"{origin}: unknown profile keys {sorted(unknown)}")
    defaults = data.get("defaults") or {}
    joints = data.get("joints")
    if not isinstance(joints, Mapping) or not joints:
        raise LimitsError(f"{origin}: 'joints' must be a non-empty mapping")
    out: dict[str, JointLimits] = {}
    for name, spec in joints.items():
        merged = {**defaults, **(spec or {})}
        bad = set(merged) - _JOINT_KEYS
        if bad:
            raise LimitsError(f"{origin}: joint {name!r} has unknown keys {sorted(bad)}")
        for key in ("min_position", "max_position", "max_velocity"):
            if key not in merged:
                raise LimitsError(f"{origin}: joint {name!r} lacks {key}")
        try:
            values = {k: (None if v is None else float(v)) for k, v in merged.items()}
        except (TypeError, ValueError):
            raise LimitsError(f"{origin}: joint {name!r} has a non-numeric limit: {dict(merged)}") from None
        out[str(name)] = JointLimits(name=str(name), **values)  # type: ignore[arg-type]
    return out


def profile_dirs() -> list[Path]:
    """Where robot profiles live: the installed share directory, then the source tree."""
    dirs: list[Path] = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        with contextlib.suppress(PackageNotFoundError):
            dirs.append(Path(get_package_share_directory(PACKAGE)) / PROFILE_DIR)
    except ImportError:
        pass
    dirs.append(Path(__file__).resolve().parent.parent / PROFILE_DIR)
    return dirs


def profile_path(profile: str) -> Path:
    """A profile name (``panda``) or a path to a YAML file."""
    if profile.endswith((".yaml", ".yml")) or os.sep in profile:
        p = Path(profile)
        if not p.is_file():
            raise LimitsError(f"robot profile file {p} does not exist")
        return p
    for d in profile_dirs():
        candidate = d / f"{profile}.yaml"
        if candidate.is_file():
            return candidate
    raise LimitsError(f"no robot profile {profile!r}; available: {available_profiles()}")


def available_profiles() -> list[str]:
    names: set[str] = set()
    for d in profile_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def load_profile(profile: str) -> dict[str, JointLimits]:
    p = profile_path(profile)
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise LimitsError(f"robot profile {p} is not valid YAML: {e}") from None
    return parse_profile(data, origin=str(p))


def load_limits(profile: str = "", urdf_path: str = "") -> dict[str, JointLimits]:
    """Limits from a profile and/or a URDF, merged most-restrictive-wins. At least one source is required."""
    tables: list[LimitTable] = []
    if profile:
        tables.append(load_profile(profile))
    if urdf_path:
        tables.append(load_urdf_limits(urdf_path))
    if not tables:
        raise LimitsError("no limit source: set a robot profile and/or a URDF path")
    return merge_limits(*tables)


def armable_joints(table: LimitTable) -> tuple[str, ...]:
    """The joints of this table the monitor could arm (finite position and velocity limits), sorted.

    The policy node passes this to ``EmbodimentManifest.check_joints_limited`` before it starts.
    """
    return tuple(sorted(n for n, lim in table.items() if lim.armable))


def limited_joints(profile: str = "", urdf_path: str = "") -> tuple[str, ...]:
    """:func:`armable_joints` of these sources' limits."""
    return armable_joints(load_limits(profile, urdf_path))


def position_bounds(
    limits: Mapping[str, JointLimits], names: Sequence[str]
) -> tuple[list[float], list[float]]:
    """(lower, upper) enforced position bounds of these joints, in order (for clipping targets before sending)."""
    missing = [n for n in names if n not in limits]
    if missing:
        raise LimitsError(f"no limits for joints {missing}")
    return [limits[n].lower for n in names], [limits[n].upper for n in names]
