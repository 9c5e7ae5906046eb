"""The policy node's decisions, without rclpy: configuration, the start-up embodiment check, when to hold,
how to build an observation, whether an instruction is out of the model's training distribution, the
diagnostics summary, and the timing statistics the node reports.

``policy_node`` wires this to topics; tests drive it directly with plain values and a fake clock.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from vla_common.manifest import ActionType, EmbodimentManifest, ManifestError

from vla_policy.backends import BackendKind
from vla_policy.executor import ExecutorConfig

T = TypeVar("T")

# Cosine distance (1 - cosine similarity) to the nearest training instruction above which an instruction is
# out of distribution, for a checkpoint that names no threshold of its own. Measured with all-MiniLM-L6-v2 by
# bench/instruction_ood.py on the simulator's templates: held-out paraphrases reach at most 0.39 (0.41 for a
# one-family model), off-task sentences ("open the front door", "make me a coffee") start at 0.53.
DEFAULT_OOD_DISTANCE_THRESHOLD = 0.45


class HoldReason(enum.Enum):
    """Why no command goes out this tick (NONE: a command does). Ordered by precedence in :func:`hold_reason`."""

    NONE = "commanding"
    STARTING = "waiting for the first /joint_states (embodiment check)"
    DISABLED = "disabled via ~/enable"
    NO_INSTRUCTION = "no instruction (empty /task_instruction)"
    NO_STATE = "no /joint_states yet"
    STALE_STATE = "/joint_states are stale"
    NO_IMAGE = "no camera frame yet"
    STALE_IMAGE = "camera frames are stale"
    QUEUE_EMPTY = "no action queued (waiting for inference)"


@dataclass(frozen=True)
class CameraInput:
    name: str  # the manifest's camera name: observation.images.<name>
    topic: str


@dataclass(frozen=True)
class PolicyNodeConfig:
    backend: BackendKind = BackendKind.NATIVE
    checkpoint: str = ""  # native checkpoint or Hugging Face model directory
    device: str = "cpu"
    hf_chunk_size: int = 1  # actions per inference of a Hugging Face model (OpenVLA 1, OFT-style more)
    inference_threads: int = 1  # torch threads for local backends: the other core stays with the control loop
    inference_process: bool = (
        True  # local backends run in a child vla-serve (no GIL shared with the control loop)
    )
    remote_uri: str = "ws://127.0.0.1:8765"
    remote_token_file: str = ""  # empty: the VLA_REMOTE_TOKEN environment variable
    remote_timeout_s: float = 1.0
    remote_image_encoding: str = "raw"
    control_rate_hz: float = 50.0
    heartbeat_rate_hz: float = 20.0
    diagnostics_rate_hz: float = 1.0
    max_image_age_s: float = 0.5
    max_state_age_s: float = 0.25
    refill_below_s: float = 0.6  # start the next inference when the queue reaches less than this ahead
    cameras: tuple[CameraInput, ...] = (CameraInput("front", "/camera/image_raw"),)
    robot_profile: str = "panda"  # safety limits (vla_safety.limits), checked against the manifest
    urdf_path: str = ""
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    # Out-of-distribution instruction check (native backend): negative takes the checkpoint's
    # info["ood_distance_threshold"], else DEFAULT_OOD_DISTANCE_THRESHOLD. 2.0 never warns.
    ood_distance_threshold: float = -1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", BackendKind(self.backend))
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if self.backend is BackendKind.LEROBOT:
            raise ValueError(
                "a LeRobot policy runs in LeRobot's own venv: serve it with `vla-serve --backend lerobot "
                "--model <dir>` (scripts/setup-lerobot.sh) and set backend:=remote"
            )
        if self.backend is not BackendKind.REMOTE and not self.checkpoint:
            raise ValueError(
                f"the {self.backend.value} backend needs the 'checkpoint' parameter (a model directory)"
            )
        if self.hf_chunk_size < 1:
            raise ValueError(f"hf_chunk_size must be >= 1, got {self.hf_chunk_size}")
        if self.inference_threads < 0:
            raise ValueError(
                f"inference_threads must be >= 0 (0: torch's default), got {self.inference_threads}"
            )
        if not 1.0 <= self.control_rate_hz <= 500.0:
            raise ValueError(f"control_rate_hz must be in [1, 500], got {self.control_rate_hz}")
        if not 10.0 <= self.heartbeat_rate_hz <= 1000.0:
            raise ValueError(
                f"heartbeat_rate_hz must be >= 10 (the safety monitor expects it), got {self.heartbeat_rate_hz}"
            )
        if not 0.0 < self.diagnostics_rate_hz <= 100.0:
            raise ValueError(f"diagnostics_rate_hz must be in (0, 100], got {self.diagnostics_rate_hz}")
        for name in ("max_image_age_s", "max_state_age_s", "remote_timeout_s", "refill_below_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value}")
        if not math.isfinite(self.ood_distance_threshold) or self.ood_distance_threshold > 2.0:
            raise ValueError(
                "ood_distance_threshold must be a cosine distance in [0, 2] (negative: the checkpoint's or "
                f"the default), got {self.ood_distance_threshold}"
            )
        if not self.cameras:
            raise ValueError("at least one camera is required")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique: {names}")
        if any(not c.topic for c in self.cameras):
            raise ValueError("every camera needs a topic")
        if not (self.robot_profile or self.urdf_path):
            raise ValueError(
                "set robot_profile and/or urdf_path: the safety limits the model is checked against"
            )

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz


def cameras_from_lists(names: Sequence[str], topics: Sequence[str]) -> tuple[CameraInput, ...]:
    if len(names) != len(topics):
        raise ValueError(f"{len(names)} camera names but {len(topics)} camera topics")
    return tuple(CameraInput(n, t) for n, t in zip(names, topics, strict=True))


def check_embodiment(
    manifest: EmbodimentManifest,
    joint_state_names: Sequence[str],
    limited_joints: Iterable[str],
    cameras: Iterable[str],
) -> None:
    """Fail closed before the first command: raise :class:`ManifestError` on any mismatch between the model's
    manifest and the robot (first /joint_states), the safety configuration and the configured cameras."""
    if manifest.action_type is not ActionType.ABSOLUTE_JOINT_POSITION:
        raise ManifestError(
            f"the model outputs {manifest.action_type.value} actions; this node commands absolute joint positions"
        )
    if len(set(joint_state_names)) != len(joint_state_names):
        raise ManifestError(f"/joint_states has duplicate names: {list(joint_state_names)}")
    manifest.check_joint_state(joint_state_names)
    missing = [n for n in manifest.action_names if n not in set(joint_state_names)]
    if missing:
        raise ManifestError(f"the model commands joints {missing} that /joint_states does not report")
    manifest.check_joints_limited(limited_joints)
    manifest.check_cameras(cameras)


class StateIndex:
    """Picks the manifest's joints, in its order, out of a /joint_states message (which may order them otherwise)."""

    def __init__(self, manifest_joints: Sequence[str]) -> None:
        self.joints = tuple(manifest_joints)
        self._cache: tuple[tuple[str, ...], np.ndarray] | None = None

    def __call__(self, names: Sequence[str], positions: Sequence[float]) -> np.ndarray:
        names = tuple(names)
        if len(names) != len(positions):
            raise ValueError(f"/joint_states has {len(names)} names but {len(positions)} positions")
        if self._cache is None or self._cache[0] != names:
            lookup = {n: i for i, n in enumerate(names)}
            missing = [j for j in self.joints if j not in lookup]
            if missing:
                raise ValueError(f"/joint_states lacks {missing}")
            self._cache = (names, np.array([lookup[j] for j in self.joints]))
        state = np.asarray(positions, dtype=np.float64)[self._cache[1]]
        if not np.all(np.isfinite(state)):
            raise ValueError("/joint_states holds NaN or inf positions")
        return state.astype(np.float32)


def hold_reason(
    *,
    started: bool,
    enabled: bool,
    instruction: str,
    state_age_s: float | None,
    image_ages_s: Mapping[str, float | None],
    config: PolicyNodeConfig,
) -> HoldReason:
    """Whether inputs allow commanding now (queue emptiness is the executor's to say)."""
    if not started:
        return HoldReason.STARTING
    if not enabled:
        return HoldReason.DISABLED
    if not instruction.strip():
        return HoldReason.NO_INSTRUCTION
    if state_age_s is None:
        return HoldReason.NO_STATE
    if not -0.05 <= state_age_s <= config.max_state_age_s:
        return HoldReason.STALE_STATE
    for age in image_ages_s.values():
        if age is None:
            return HoldReason.NO_IMAGE
    for age in image_ages_s.values():
        if age is not None and not -0.05 <= age <= config.max_image_age_s:
            return HoldReason.STALE_IMAGE
    return HoldReason.NONE


# --- out-of-distribution instructions ---------------------------------------------------------------------


class OODStatus(enum.Enum):
    """What is known about the current instruction against the model's training instructions."""

    IN_DISTRIBUTION = "in distribution"
    OUT_OF_DISTRIBUTION = "out of distribution"
    PENDING = "pending"  # the encoder is loading, or the distance is being computed
    UNCHECKED = "unchecked"  # no check for this model (InstructionCheck.reason says why)
    IDLE = "idle"  # the empty instruction


@dataclass(frozen=True)
class InstructionCheck:
    """The verdict on one instruction. ``distance`` is 1 - cosine similarity to the nearest training
    instruction's embedding (0: the same meaning, 1: unrelated, 2: opposite); ``nearest`` is that instruction."""

    instruction: str
    status: OODStatus
    distance: float = math.nan
    threshold: float = math.nan
    nearest: str = ""
    reason: str = ""  # why UNCHECKED
    acts_on: str = ""  # the training instruction the model acts on instead (its ``instruction_nearest``)

    @property
    def ood(self) -> bool:
        return self.status is OODStatus.OUT_OF_DISTRIBUTION

    def summary(self) -> str:
        """For diagnostics messages: "instruction is out of distribution (distance 0.62 > 0.35 to '...')"."""
        return (
            f"instruction is out of distribution (distance {self.distance:.2f} > {self.threshold:.2f} "
            f"to {self.nearest!r})"
        )

    def log_line(self) -> str:
        """One line for the node's log when the instruction changes."""
        if self.status is OODStatus.OUT_OF_DISTRIBUTION:
            return (
                f"instruction {self.instruction!r} is out of distribution: cosine distance {self.distance:.3f} "
                f"to the nearest training instruction {self.nearest!r} is above {self.threshold:.3f}; "
                + (
                    f"commanding anyway, as {self.acts_on!r} (the training instruction it matches best)"
                    if self.acts_on
                    else "commanding anyway, expect the model to do something other than asked"
                )
            )
        if self.status is OODStatus.IN_DISTRIBUTION:
            return (
                f"instruction {self.instruction!r} is in distribution: cosine distance {self.distance:.3f} "
                f"to {self.nearest!r} (threshold {self.threshold:.3f})"
                + (f"; the model acts on the training instruction {self.acts_on!r}" if self.acts_on else "")
            )
        if self.status is OODStatus.UNCHECKED:
            return f"instruction {self.instruction!r}: no out-of-distribution check ({self.reason})"
        return f"instruction {self.instruction!r}: {self.status.value}"

    def diagnostic_values(self) -> dict[str, str]:
        """Key/values for the node's /diagnostics entry."""
        checked = self.status in (OODStatus.IN_DISTRIBUTION, OODStatus.OUT_OF_DISTRIBUTION)
        check = self.status.value
        if self.status is OODStatus.UNCHECKED and self.reason:
            check = f"{check}: {self.reason}"
        return {
            "instruction_ood": ("true" if self.ood else "false") if checked else "unknown",
            "instruction_check": check,
            "instruction_distance": f"{self.distance:.3f}" if checked else "nan",
            "ood_threshold": "nan" if math.isnan(self.threshold) else f"{self.threshold:.3f}",
            "nearest_training_instruction": self.nearest,
            # The sentence the model is given: with instruction_nearest, the training one it matches best.
            "model_instruction": (self.acts_on or self.instruction) if checked else "unknown",
        }


def instruction_table(texts: Sequence[str], embed: Callable[[Sequence[str]], np.ndarray]) -> np.ndarray:
    """[n, d] embeddings of ``texts``, one sentence at a time, as a sentence arriving at run time is embedded
    (a padded batch moves the floats, which could flip a near tie): the table the OOD check searches."""
    return np.concatenate([np.atleast_2d(np.asarray(embed([text]), dtype=np.float64)) for text in texts])


def aligned_similarity(query: np.ndarray, reference: np.ndarray) -> float:
    """How well two sentences' token embeddings ([n, d] and [m, d], unit rows) line up in order, in [0, 1].

    The best order-preserving alignment of query tokens to reference tokens (each used at most once, a pair
    scoring its cosine similarity, negatives counting 0; a soft edit distance), its total read as recall
    (per query token) and precision (per reference token), combined as their F1. 1: the same tokens in the
    same order. Unlike one pooled sentence vector, a word that only one side has ("without lifting it")
    costs its own share and no more, and the order of two colours (which block goes on which) counts.
    """
    if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]:
        raise ValueError(
            f"token embeddings must be [n, d] and [m, d], got {query.shape} and {reference.shape}"
        )
    if len(query) == 0 or len(reference) == 0:
        return 0.0
    similarity = np.clip(query @ reference.T, 0.0, None)
    best = np.zeros(reference.shape[0] + 1)  # best[j]: the best alignment of the rows so far to reference[:j]
    for row in similarity:
        # Pair this query token with reference j, or leave it out; then the running max over j lets it
        # skip reference tokens (all totals are >= 0).
        best[1:] = np.maximum.accumulate(np.maximum(best[1:], best[:-1] + row))
    total = float(best[-1])
    if total <= 0.0:
        return 0.0
    recall, precision = total / len(query), total / len(reference)
    return 2.0 * recall * precision / (recall + precision)


class InstructionGrounding:
    """Maps an instruction to the training instruction the model should act on (``instruction_nearest``): the
    one whose tokens align best with it (:func:`aligned_similarity` over the instruction encoder's contextual
    token embeddings). A training sentence maps to itself. Results are cached per text.

    Measured by ``bench/instruction_grounding.py`` (pick, place, push and stack trained together, all-MiniLM-L6-v2):
    the held-out paraphrases of all four families map to their own task (family and slots), where the nearest
    pooled sentence embedding found it for 100 %, 75 %, 48 % and 48 % of them.
    """

    def __init__(self, instructions: Sequence[str], tokens: Callable[[str], np.ndarray]) -> None:
        if not instructions:
            raise ValueError("no training instructions to ground on")
        self.instructions = tuple(instructions)
        self._tokens = tokens
        self._references = [np.asarray(tokens(text), dtype=np.float64) for text in self.instructions]
        self._cache: dict[str, str] = {}

    def __call__(self, instruction: str) -> str:
        found = self._cache.get(instruction)
        if found is None:
            if instruction in self.instructions:
                found = instruction
            else:
                query = np.asarray(self._tokens(instruction), dtype=np.float64)
                scores = [aligned_similarity(query, reference) for reference in self._references]
                found = self.instructions[int(np.argmax(scores))]
            self._cache[instruction] = found
        return found


def nearest_instruction(query: np.ndarray, references: np.ndarray) -> tuple[float, int]:
    """Cosine distance of ``query`` [d] to its nearest row of ``references`` [n, d], and that row's index.

    Both sides are L2-normalised here (the encoders already do; a zero vector is at distance 1 of everything).
    """
    query = np.asarray(query, dtype=np.float64).reshape(-1)
    refs = np.asarray(references, dtype=np.float64)
    if refs.ndim != 2 or refs.shape[0] == 0 or refs.shape[1] != query.shape[0]:
        raise ValueError(f"references must be [n >= 1, {query.shape[0]}], got {refs.shape}")
    similarity = _unit_rows(refs) @ _unit_rows(query[None])[0]
    best = int(np.argmax(similarity))
    return float(np.clip(1.0 - similarity[best], 0.0, 2.0)), best


def _unit_rows(x: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings hold NaN or inf")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def training_instructions(info: Mapping[str, object]) -> tuple[str, ...] | None:
    """The instructions a native checkpoint was trained on (``info["instructions"]``, written by vla-train),
    or None for a checkpoint from before they were recorded. Raises ValueError on a malformed list."""
    raw = info.get("instructions")
    if raw is None:
        return None
    if not isinstance(raw, list | tuple) or not all(isinstance(t, str) for t in raw):
        raise ValueError(f"the checkpoint's info['instructions'] must be a list of strings, got {raw!r:.80}")
    texts = tuple(sorted({t for t in raw if t.strip()}))
    if not texts:
        raise ValueError("the checkpoint's info['instructions'] is empty")
    return texts


def resolve_ood_threshold(parameter: float, info: Mapping[str, object]) -> tuple[float, str]:
    """The threshold in force and where it came from: the node parameter when >= 0, else the checkpoint's
    ``info["ood_distance_threshold"]``, else :data:`DEFAULT_OOD_DISTANCE_THRESHOLD`."""
    if parameter >= 0:
        return float(parameter), "parameter ood_distance_threshold"
    value = info.get("ood_distance_threshold")
    if value is None:
        return DEFAULT_OOD_DISTANCE_THRESHOLD, "default"
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 2.0:
        raise ValueError(f"the checkpoint's info['ood_distance_threshold'] must be in [0, 2], got {value!r}")
    return float(value), "checkpoint"


class InstructionOODDetector:
    """Flags instructions far from every training instruction in the model's own embedding space.

    ``embed`` maps texts to [n, d] embeddings (the model's instruction encoder); the training instructions are
    embedded once here (:func:`instruction_table`), a new instruction once on its first check (verdicts are
    cached per text). ``grounding``: the model acts on the training instruction this maps an instruction to
    (its ``instruction_nearest``, :class:`InstructionGrounding`), which the verdicts then say.
    """

    def __init__(
        self,
        instructions: Sequence[str],
        embed: Callable[[Sequence[str]], np.ndarray],
        threshold: float,
        grounding: Callable[[str], str] | None = None,
    ) -> None:
        if not instructions:
            raise ValueError("no training instructions to compare with")
        if not 0.0 <= threshold <= 2.0:
            raise ValueError(f"the OOD threshold must be a cosine distance in [0, 2], got {threshold}")
        self.instructions = tuple(instructions)
        self.threshold = float(threshold)
        self._grounding = grounding
        self._embed = embed
        self._references = instruction_table(self.instructions, embed)
        if self._references.shape[0] != len(self.instructions):
            raise ValueError(
                f"{len(self.instructions)} instructions gave {self._references.shape[0]} embeddings"
            )
        self._cache: dict[str, InstructionCheck] = {}

    def check(self, instruction: str) -> InstructionCheck:
        if not instruction.strip():
            return InstructionCheck(instruction, OODStatus.IDLE, threshold=self.threshold)
        cached = self._cache.get(instruction)
        if cached is None:
            distance, index = nearest_instruction(np.asarray(self._embed([instruction]))[0], self._references)
            status = OODStatus.OUT_OF_DISTRIBUTION if distance > self.threshold else OODStatus.IN_DISTRIBUTION
            cached = InstructionCheck(
                instruction, status, distance, self.threshold, self.instructions[index],
                acts_on=self._grounding(instruction) if self._grounding is not None else "",
            )  # fmt: skip
            self._cache[instruction] = cached
        return cached


class DiagnosticLevel(enum.IntEnum):
    """diagnostic_msgs/DiagnosticStatus levels."""

    OK = 0
    WARN = 1
    ERROR = 2


def diagnostic_summary(
    hold: HoldReason, safety_refusing: bool, safety_message: str, instruction: InstructionCheck
) -> tuple[DiagnosticLevel, str]:
    """Level and message of the node's /diagnostics entry.

    WARN while the inputs hold the robot for a fault (not for disabled or idle), while the safety monitor drops
    what the node sends, and while the instruction is out of distribution (which never stops commanding).
    """
    if hold is HoldReason.NONE and safety_refusing:
        level = DiagnosticLevel.WARN
        message = f"commanding, but the safety monitor drops the commands: {safety_message}"
    elif hold is HoldReason.NONE:
        level, message = DiagnosticLevel.OK, "commanding"
    elif hold in (HoldReason.DISABLED, HoldReason.NO_INSTRUCTION):
        level, message = DiagnosticLevel.OK, f"holding: {hold.value}"
    else:
        level, message = DiagnosticLevel.WARN, f"holding: {hold.value}"
    if instruction.ood:
        level = max(level, DiagnosticLevel.WARN)
        joiner = ", but the " if message == "commanding" else "; "
        message = f"{message}{joiner}{instruction.summary()}"
    return level, message


class ChangeReporter(Generic[T]):
    """Says when a changing value should be reported: on a change, at most once per ``min_interval_s``.

    A throttled log-on-change drops a change that follows the last report too soon, so the log can end on a
    stale value; this one reports the latest value as soon as the interval allows.
    """

    def __init__(self, min_interval_s: float, initial: T) -> None:
        self.min_interval_s = min_interval_s
        self._reported = initial
        self._last_s = -math.inf

    def update(self, value: T, now_s: float) -> bool:
        """True when ``value`` should be reported now (it is then taken as reported)."""
        if value == self._reported or now_s - self._last_s < self.min_interval_s:
            return False
        self._reported, self._last_s = value, now_s
        return True


class RollingStats:
    """The last ``size`` samples of something (latencies, periods) and their percentiles."""

    def __init__(self, size: int = 500) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        if math.isfinite(value):
            self._values.append(value)

    def __len__(self) -> int:
        return len(self._values)

    def values(self) -> np.ndarray:
        return np.fromiter(self._values, float)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.values(), q)) if self._values else math.nan

    def mean(self) -> float:
        return float(np.mean(self.values())) if self._values else math.nan


class ControlTiming:
    """Achieved control rate, period jitter and observation-to-command latency, from tick times.

    ``tick(now, published, chunk_stamp)``: ``now`` on the node's clock; ``chunk_stamp`` is the observation
    stamp of the newest chunk the command came from; the first command from a chunk gives one latency sample.
    """

    def __init__(self, period_s: float, window: int = 500) -> None:
        self.period_s = period_s
        self.periods = RollingStats(window)
        self.latencies = RollingStats(window)
        self._last_tick: float | None = None
        self._last_chunk_stamp: float | None = None
        self.ticks = 0
        self.published = 0

    def tick(self, now: float, published: bool, chunk_stamp: float | None) -> None:
        if self._last_tick is not None:
            self.periods.add(now - self._last_tick)
        self._last_tick = now
        self.ticks += 1
        if published:
            self.published += 1
            if chunk_stamp is not None and chunk_stamp != self._last_chunk_stamp:
                self._last_chunk_stamp = chunk_stamp
                self.latencies.add(now - chunk_stamp)

    @property
    def achieved_rate_hz(self) -> float:
        mean = self.periods.mean()
        return 1.0 / mean if mean and math.isfinite(mean) and mean > 0 else math.nan

    def jitter_p99_s(self) -> float:
        if not len(self.periods):
            return math.nan
        return float(np.percentile(np.abs(self.periods.values() - self.period_s), 99))
