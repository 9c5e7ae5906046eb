"""The one task definition: families, language templates, success predicates and time limits.

Every consumer (the Gymnasium env, the scripted experts, ``sim_node``, ``expert_node`` and evaluation) takes its
tasks from here.

Families (:class:`TaskFamily`):

- ``pick``: "pick up the {block} block" (lifted at least ``LIFT_HEIGHT`` and held in the gripper)
- ``stack``: "put the {block} block on the {base} block" (resting on it, released)
- ``push``: "push the {block} block to the {direction}" (moved ``PUSH_DISTANCE`` that way, never lifted)
- ``place``: "put the {block} block in the {target}" with target ``bowl`` or ``zone`` (inside it, released)
- ``stack_two``: "stack the {block} block on the {base} one, then the {top} block on the {block} one"

Directions are the robot's own (its base frame): ``front`` is away from the robot (+x), ``back`` towards it
(-x), ``left`` is the robot's left (+y), ``right`` its right (-y). The ``front`` camera faces the robot across
the table, so the robot's left appears on the image's right.

Each family has training templates and a disjoint held-out set (``Split.HELDOUT``) kept for evaluation only.
:func:`sample_task` draws a task; :func:`parse_instruction` maps any template's text (either split) back to the
task, so a node that only hears ``/task_instruction`` knows what to do. :func:`is_success` judges a
:class:`WorldState` snapshot; it needs no simulator. :func:`referent_positions` gives the privileged ground
truth a dataset records as ``observation.environment_state``: where the named block and its goal are.
Pure Python: no pybullet, no rclpy.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

# Block colours (name -> RGBA). The zone and the bowl use colours outside this palette.
COLOURS: Mapping[str, tuple[float, float, float, float]] = MappingProxyType(
    {
        "red": (0.85, 0.1, 0.1, 1.0),
        "green": (0.1, 0.7, 0.15, 1.0),
        "blue": (0.1, 0.25, 0.9, 1.0),
        "yellow": (0.95, 0.85, 0.1, 1.0),
        "purple": (0.55, 0.15, 0.75, 1.0),
        "orange": (1.0, 0.5, 0.0, 1.0),
    }
)
DIRECTIONS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"front": (1.0, 0.0), "back": (-1.0, 0.0), "left": (0.0, 1.0), "right": (0.0, -1.0)}
)
TARGETS: tuple[str, ...] = ("bowl", "zone")

BLOCK_SIZE = 0.04  # m, cube edge
LIFT_HEIGHT = 0.08  # m above the table, for pick
PUSH_DISTANCE = 0.10  # m along the direction, for push
PUSH_MAX_SIDEWAYS = 0.06  # m across the direction, for push
STACK_XY_TOLERANCE = 0.6 * BLOCK_SIZE
STACK_Z_TOLERANCE = 0.3 * BLOCK_SIZE
REST_Z_TOLERANCE = 0.3 * BLOCK_SIZE


class TaskFamily(str, enum.Enum):
    PICK = "pick"
    STACK = "stack"
    PUSH = "push"
    PLACE = "place"
    STACK_TWO = "stack_two"


class Split(str, enum.Enum):
    TRAIN = "train"
    HELDOUT = "heldout"


@dataclass(frozen=True)
class FamilySpec:
    family: TaskFamily
    slots: tuple[str, ...]  # the placeholders its templates fill, in sampling order
    train_templates: tuple[str, ...]
    heldout_templates: tuple[str, ...]
    time_limit_s: float

    def __post_init__(self) -> None:
        if not self.train_templates or not self.heldout_templates:
            raise ValueError(f"{self.family.value}: needs train and held-out templates")
        if set(self.train_templates) & set(self.heldout_templates):
            raise ValueError(f"{self.family.value}: a template is in both splits")
        for template in (*self.train_templates, *self.heldout_templates):
            used = set(re.findall(r"\{(\w+)\}", template))
            if used != set(self.slots):
                raise ValueError(f"{self.family.value}: template {template!r} must use exactly {self.slots}")
        if self.time_limit_s <= 0:
            raise ValueError(f"{self.family.value}: time limit must be positive")

    def templates(self, split: Split) -> tuple[str, ...]:
        return self.train_templates if split is Split.TRAIN else self.heldout_templates


FAMILIES: Mapping[TaskFamily, FamilySpec] = MappingProxyType(
    {
        TaskFamily.PICK: FamilySpec(
            TaskFamily.PICK,
            ("block",),
            (
                "pick up the {block} block",
                "grasp the {block} block and lift it",
                "lift the {block} block",
                "pick the {block} cube up",
            ),
            ("raise the {block} cube off the table", "grab the {block} block and hold it up"),
            15.0,
        ),
        TaskFamily.STACK: FamilySpec(
            TaskFamily.STACK,
            ("block", "base"),
            (
                "put the {block} block on the {base} block",
                "place the {block} block on top of the {base} block",
                "stack the {block} block on the {base} block",
            ),
            (
                "set the {block} cube onto the {base} cube",
                "move the {block} block so it sits on the {base} block",
            ),
            20.0,
        ),
        TaskFamily.PUSH: FamilySpec(
            TaskFamily.PUSH,
            ("block", "direction"),
            (
                "push the {block} block to the {direction}",
                "slide the {block} block to the {direction}",
                "push the {block} block towards the {direction}",
            ),
            (
                "shove the {block} cube to the {direction}",
                "move the {block} block to the {direction} without lifting it",
            ),
            15.0,
        ),
        TaskFamily.PLACE: FamilySpec(
            TaskFamily.PLACE,
            ("block", "target"),
            (
                "put the {block} block in the {target}",
                "place the {block} block into the {target}",
                "drop the {block} block in the {target}",
            ),
            ("move the {block} cube into the {target}", "the {block} block goes in the {target}"),
            20.0,
        ),
        TaskFamily.STACK_TWO: FamilySpec(
            TaskFamily.STACK_TWO,
            ("block", "base", "top"),
            (
                "stack the {block} block on the {base} one, then the {top} block on the {block} one",
                "put the {block} block on the {base} block and then the {top} block on the {block} block",
            ),
            (
                "build a tower: {base} at the bottom, then {block}, then {top} on top",
                "place {block} on {base}, and after that place {top} on {block}",
            ),
            40.0,
        ),
    }
)


@dataclass(frozen=True)
class Task:
    """A concrete task: its family, the filled slots and the instruction text."""

    family: TaskFamily
    slots: Mapping[str, str]
    instruction: str
    split: Split = Split.TRAIN

    def __post_init__(self) -> None:
        spec = FAMILIES[self.family]
        if set(self.slots) != set(spec.slots):
            raise ValueError(f"{self.family.value} needs slots {spec.slots}, got {sorted(self.slots)}")
        colours = [self.slots[s] for s in ("block", "base", "top") if s in self.slots]
        for colour in colours:
            if colour not in COLOURS:
                raise ValueError(f"unknown colour {colour!r}; known: {sorted(COLOURS)}")
        if len(set(colours)) != len(colours):
            raise ValueError(f"{self.family.value}: blocks must be distinct, got {colours}")
        if "direction" in self.slots and self.slots["direction"] not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.slots['direction']!r}; known: {sorted(DIRECTIONS)}")
        if "target" in self.slots and self.slots["target"] not in TARGETS:
            raise ValueError(f"unknown target {self.slots['target']!r}; known: {TARGETS}")
        object.__setattr__(self, "slots", MappingProxyType(dict(self.slots)))

    @property
    def time_limit_s(self) -> float:
        return FAMILIES[self.family].time_limit_s

    @property
    def colours(self) -> tuple[str, ...]:
        """The blocks the task is about (the scene must hold them)."""
        return tuple(self.slots[s] for s in ("block", "base", "top") if s in self.slots)


def make_task(
    family: TaskFamily | str, split: Split | str = Split.TRAIN, template: int = 0, **slots: str
) -> Task:
    """A task from explicit slots, worded by the ``template``-th template of ``split``."""
    family, split = TaskFamily(family), Split(split)
    templates = FAMILIES[family].templates(split)
    return Task(family, slots, templates[template % len(templates)].format(**slots), split)


def sample_task(family: TaskFamily | str, rng: np.random.Generator, split: Split | str = Split.TRAIN) -> Task:
    """Draw slots and a template of ``split`` for ``family``."""
    family, split = TaskFamily(family), Split(split)
    spec = FAMILIES[family]
    colours = list(rng.permutation(sorted(COLOURS)))
    slots: dict[str, str] = {}
    for slot in spec.slots:
        if slot in ("block", "base", "top"):
            slots[slot] = str(colours.pop())
        elif slot == "direction":
            slots[slot] = str(rng.choice(sorted(DIRECTIONS)))
        elif slot == "target":
            slots[slot] = str(rng.choice(TARGETS))
    templates = spec.templates(split)
    template = templates[int(rng.integers(len(templates)))]
    return Task(family, slots, template.format(**slots), split)


def _template_regex(template: str) -> re.Pattern[str]:
    choices = {
        "block": "|".join(COLOURS),
        "base": "|".join(COLOURS),
        "top": "|".join(COLOURS),
        "direction": "|".join(DIRECTIONS),
        "target": "|".join(TARGETS),
    }
    seen: set[str] = set()
    pattern = ""
    for literal, slot in re.findall(r"([^{]*)(?:\{(\w+)\})?", template):
        pattern += re.escape(literal)
        if slot:
            pattern += f"(?P={slot})" if slot in seen else f"(?P<{slot}>{choices[slot]})"
            seen.add(slot)
    return re.compile(pattern, re.IGNORECASE)


_PARSERS: tuple[tuple[TaskFamily, Split, re.Pattern[str]], ...] = tuple(
    (family, split, _template_regex(template))
    for family, spec in FAMILIES.items()
    for split in Split
    for template in spec.templates(split)
)


def parse_instruction(text: str) -> Task:
    """The task an instruction of any template states; raises ``ValueError`` for text no template matches."""
    cleaned = " ".join(text.strip().rstrip(".!").split())
    for family, split, regex in _PARSERS:
        match = regex.fullmatch(cleaned)
        if match:
            slots = {k: v.lower() for k, v in match.groupdict().items()}
            return Task(family, slots, cleaned, split)
    raise ValueError(f"no task template matches instruction {text!r}")


TaskRequest = Task | TaskFamily | str | None


def resolve_task(request: TaskRequest, rng: np.random.Generator, split: Split | str = Split.TRAIN) -> Task:
    """A concrete task: a Task as is, a family name sampled, an instruction parsed, None or '' a random family."""
    split = Split(split)
    if isinstance(request, Task):
        return request
    if not request:
        family = list(FAMILIES)[int(rng.integers(len(FAMILIES)))]
        return sample_task(family, rng, split)
    if isinstance(request, TaskFamily) or request in {f.value for f in TaskFamily}:
        return sample_task(TaskFamily(request), rng, split)
    return parse_instruction(str(request))


def validate_task_request(text: str) -> None:
    """Raise ``ValueError`` unless ``text`` is empty, a family name, or an instruction of some template."""
    if text and text not in {f.value for f in TaskFamily}:
        parse_instruction(text)


def all_templates(split: Split | str) -> dict[TaskFamily, tuple[str, ...]]:
    split = Split(split)
    return {family: spec.templates(split) for family, spec in FAMILIES.items()}


# --- the world as the predicates see it -----------------------------------------------------------------


@dataclass(frozen=True)
class BlockState:
    position: tuple[float, float, float]  # m, centre, world frame
    initial_position: tuple[float, float, float]  # where the episode started it
    orientation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)  # quaternion x, y, z, w

    @property
    def yaw(self) -> float:
        x, y, z, w = self.orientation
        return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


@dataclass(frozen=True)
class TargetState:
    position: tuple[float, float, float]  # centre of the floor of the target
    half_extent: float  # zone: half the side of the square; bowl: inner radius
    rim_height: float  # bowl wall height above its floor (0 for the zone)


@dataclass(frozen=True)
class WorldState:
    """A snapshot of the scene: everything a success predicate or an expert needs."""

    blocks: Mapping[str, BlockState]
    targets: Mapping[str, TargetState]
    table_height: float  # z of the table top
    held: frozenset[str] = field(default_factory=frozenset)  # blocks touching both fingers

    def rest_z(self) -> float:
        return self.table_height + BLOCK_SIZE / 2


def on_top(world: WorldState, upper: str, lower: str) -> bool:
    a, b = np.array(world.blocks[upper].position), np.array(world.blocks[lower].position)
    return bool(
        np.linalg.norm(a[:2] - b[:2]) < STACK_XY_TOLERANCE
        and abs((a[2] - b[2]) - BLOCK_SIZE) < STACK_Z_TOLERANCE
    )


def resting_on_table(world: WorldState, colour: str) -> bool:
    return abs(world.blocks[colour].position[2] - world.rest_z()) < REST_Z_TOLERANCE


def in_target(world: WorldState, colour: str, target_name: str) -> bool:
    block = np.array(world.blocks[colour].position)
    target = world.targets[target_name]
    centre = np.array(target.position)
    if target_name == "bowl":
        inside = np.linalg.norm(block[:2] - centre[:2]) < target.half_extent
    else:
        inside = bool(np.all(np.abs(block[:2] - centre[:2]) < target.half_extent))
    floor_rest = centre[2] + BLOCK_SIZE / 2
    return bool(inside and abs(block[2] - floor_rest) < REST_Z_TOLERANCE)


def push_displacement(world: WorldState, colour: str, direction: str) -> tuple[float, float]:
    """(along, across) the direction: how far the block has moved from its start."""
    block = world.blocks[colour]
    delta = np.array(block.position[:2]) - np.array(block.initial_position[:2])
    along_axis = np.array(DIRECTIONS[direction])
    along = float(delta @ along_axis)
    across = float(abs(delta @ np.array([-along_axis[1], along_axis[0]])))
    return along, across


def is_success(task: Task, world: WorldState) -> bool:
    """The task's success predicate on a world snapshot."""
    missing = [c for c in task.colours if c not in world.blocks]
    if missing:
        raise ValueError(f"world has no {missing} block for task {task.instruction!r}")
    s = task.slots
    if task.family is TaskFamily.PICK:
        lifted = world.blocks[s["block"]].position[2] - world.rest_z() > LIFT_HEIGHT
        return bool(lifted and s["block"] in world.held)
    if task.family is TaskFamily.STACK:
        return (
            on_top(world, s["block"], s["base"])
            and resting_on_table(world, s["base"])
            and s["block"] not in world.held
        )
    if task.family is TaskFamily.PUSH:
        along, across = push_displacement(world, s["block"], s["direction"])
        return (
            along > PUSH_DISTANCE
            and across < PUSH_MAX_SIDEWAYS
            and resting_on_table(world, s["block"])
            and s["block"] not in world.held
        )
    if task.family is TaskFamily.PLACE:
        return in_target(world, s["block"], s["target"]) and s["block"] not in world.held
    if task.family is TaskFamily.STACK_TWO:
        return (
            on_top(world, s["block"], s["base"])
            and on_top(world, s["top"], s["block"])
            and resting_on_table(world, s["base"])
            and not (set(task.colours) & world.held)
        )
    raise ValueError(f"unhandled family {task.family}")


def time_limit_steps(task: Task, control_hz: float) -> int:
    return math.ceil(task.time_limit_s * control_hz)


# --- referents: the privileged ground truth of where the instruction's objects are ------------------------

# The names of ``observation.environment_state`` (the feature LeRobot uses for privileged environment state).
REFERENT_NAMES: tuple[str, ...] = ("target.x", "target.y", "target.z", "goal.x", "goal.y", "goal.z")


@dataclass(frozen=True)
class Referent:
    """Where one referent is: the current position of a named object (``object``: a block colour, ``bowl``
    or ``zone``), or a fixed ``point``. Exactly one of the two is set."""

    object: str = ""
    point: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if bool(self.object) == (self.point is not None):
            raise ValueError("a referent is either an object or a point")

    def position(self, world: WorldState) -> tuple[float, float, float]:
        if self.point is not None:
            return self.point
        if self.object in world.blocks:
            return world.blocks[self.object].position
        if self.object in world.targets:
            return world.targets[self.object].position
        raise ValueError(f"world has no object {self.object!r}")

    def to_dict(self) -> dict[str, object]:
        """As ``/sim/scene`` carries it: ``{"object": name}`` or ``{"point": [x, y, z]}``."""
        return {"object": self.object} if self.object else {"point": [float(v) for v in self.point or ()]}


def referents(task: Task, world: WorldState) -> tuple[Referent, Referent]:
    """The instruction's (target, goal).

    The target is the block the instruction names first (the one to pick, push, place or stack). The goal is
    where it must go: the goal block for ``stack`` and for ``stack_two`` (its first step, ``block`` on
    ``base``), the bowl or zone for ``place``, for ``push`` the point ``PUSH_DISTANCE`` from the block's
    initial position in the named direction (at its initial height), and for ``pick`` the target itself.
    """
    s = task.slots
    target = Referent(object=s["block"])
    if task.family is TaskFamily.PICK:
        return target, target
    if task.family in (TaskFamily.STACK, TaskFamily.STACK_TWO):
        return target, Referent(object=s["base"])
    if task.family is TaskFamily.PLACE:
        return target, Referent(object=s["target"])
    if task.family is TaskFamily.PUSH:
        x, y, z = world.blocks[s["block"]].initial_position
        dx, dy = DIRECTIONS[s["direction"]]
        return target, Referent(point=(x + dx * PUSH_DISTANCE, y + dy * PUSH_DISTANCE, z))
    raise ValueError(f"unhandled family {task.family}")


def referent_positions(task: Task, world: WorldState) -> np.ndarray:
    """float32[6] in ``REFERENT_NAMES`` order: the target's and the goal's positions (m) in the robot base frame.

    Positions are :class:`WorldState`'s: block centres, the bowl's floor centre, the zone's centre on the
    table. The embedded simulator stands the Panda's base at its world origin with no rotation
    (:meth:`vla_sim.scene.Scene.robot_base_pose`, checked by a test), so world coordinates are base-frame
    coordinates: x away from the robot, y to its left, z up from the table top.
    """
    target, goal = referents(task, world)
    return np.array([*target.position(world), *goal.position(world)], dtype=np.float32)
