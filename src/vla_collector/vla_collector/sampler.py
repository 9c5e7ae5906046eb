"""Fixed-rate sampling of asynchronous streams into dataset frames, with explicit tolerance rules.

The same :class:`FrameSampler` runs live in ``collector_node`` and offline when a bag is converted or a
crashed episode is recovered, so a dataset built from the raw recording equals the one built live.

Rules (all times are message stamps: ``header.stamp``, or the receive time when a stamp is zero):

1. **Ticks.** Frame ``k`` is taken at ``t_k = t_0 + k / fps``. ``t_0`` is the first instant at which every
   required stream (state, each camera, action, and the environment state when recorded) has delivered a
   message, and not before the episode start.
2. **Observations are causal.** For state, each camera and the environment state (privileged simulator
   state, ``SamplerConfig.environment``) the sample is the latest message with ``stamp <= t_k``: what a
   policy running at ``t_k`` would have seen.
3. **The action is the command answering that observation.** The sample is the latest command with
   ``stamp < t_k + action_lookahead`` (default one frame period): the target in force during the frame.
4. **Freshness.** A sample older than its stream's ``max_age`` (state/camera: ``t_k - stamp``; action:
   ``t_k + action_lookahead - stamp``), or a camera image already used by the previous frame (a camera
   slower than the dataset), makes the frame a *drop*: it is still written with the latest data (so
   timestamps stay ``k / fps``), but counted, and the episode report says which stream was late.
5. **When a tick is decided.** As soon as every stream has delivered a message stamped after the tick's
   reference time (so nothing still in flight can change the choice), or, for a stalled stream, once
   the clock passes ``t_k + action_lookahead + max_wait``. The recorder and every conversion move the
   clock only through :meth:`FrameSampler.advance_received`, after each message: the clock is then the
   newest stamp any stream has delivered, capped by that message's receive (log) time. So a stream is
   stalled when the *other* streams have moved on by ``max_wait``, not when messages merely reach the
   recorder late (a delay that holds back every stream alike is not a stall; a stream stamped ahead of
   the receive clock cannot rush the others); and since the bag keeps every message with its receive
   time, a bag converted later decides every tick exactly where the live recorder did. The episode's
   start and stop are requests on the receive clock; they are moved onto the stamps by the delivery
   delay last seen (receive time minus the newest stamp), so a delay does not turn into late frames at
   the end of an episode, while streams that fell silent before the stop still do.
6. **Acceptance.** The episode's real rate is ``fps * fresh_frames / frames``. If it is below
   ``fps * (1 - rate_tolerance)``, or any required stream has a gap longer than ``max_gap``, the episode
   is refused for the dataset (its raw recording is kept) with a report that says why.

Pure Python: no rclpy. Payloads are opaque (raw bytes live, decoded messages offline).
"""

from __future__ import annotations

import bisect
import enum
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

NS = 1_000_000_000


class StreamKind(str, enum.Enum):
    STATE = "state"
    ACTION = "action"
    CAMERA = "camera"
    ENVIRONMENT = "environment"


class EpisodeVerdict(str, enum.Enum):
    ACCEPTED = "accepted"
    RATE_TOO_LOW = "rate_too_low"
    GAP_TOO_LONG = "gap_too_long"
    EMPTY = "empty"


@dataclass(frozen=True)
class SamplerConfig:
    """Rates and tolerances (seconds). ``None`` ages default to 1.5 frame periods for state and cameras and
    3 for the action: a robot holds its last position target, so a command stays the action in force
    for longer than an observation stays current (a 10 Hz teleoperator with jitter must not drop frames).
    ``environment``: also sample a privileged environment-state stream (``environment_max_age_s``: 1.5
    frame periods by default), required like the state."""

    fps: int = 10
    cameras: tuple[str, ...] = ("front",)
    state_max_age_s: float | None = None
    camera_max_age_s: float | None = None
    action_max_age_s: float | None = None
    action_lookahead_s: float | None = None
    max_wait_s: float = 0.5
    rate_tolerance: float = 0.05
    max_gap_s: float = 0.5
    environment: bool = False
    environment_max_age_s: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.fps, bool) or not isinstance(self.fps, int) or self.fps <= 0:
            raise ValueError(f"fps must be a positive integer, got {self.fps!r}")
        object.__setattr__(self, "cameras", tuple(self.cameras))
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"camera names must be unique: {self.cameras}")
        period = 1.0 / self.fps
        for name, periods in (
            ("state_max_age_s", 1.5),
            ("camera_max_age_s", 1.5),
            ("action_max_age_s", 3.0),
            ("environment_max_age_s", 1.5),
        ):
            if getattr(self, name) is None:
                object.__setattr__(self, name, periods * period)
        if self.action_lookahead_s is None:
            object.__setattr__(self, "action_lookahead_s", period)
        for name in (
            "state_max_age_s",
            "camera_max_age_s",
            "action_max_age_s",
            "environment_max_age_s",
            "max_gap_s",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        for name in ("action_lookahead_s", "max_wait_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be >= 0 and finite, got {value}")
        if not 0.0 <= self.rate_tolerance < 1.0:
            raise ValueError(f"rate_tolerance must be in [0, 1), got {self.rate_tolerance}")

    @property
    def period_ns(self) -> int:
        return NS // self.fps

    def max_age_ns(self, kind: StreamKind) -> int:
        age = {
            StreamKind.STATE: self.state_max_age_s,
            StreamKind.CAMERA: self.camera_max_age_s,
            StreamKind.ACTION: self.action_max_age_s,
            StreamKind.ENVIRONMENT: self.environment_max_age_s,
        }[kind]
        return int(float(age) * NS)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Sample:
    stamp_ns: int
    payload: Any


@dataclass(frozen=True)
class Frame:
    """One dataset frame: the chosen sample of every stream at tick ``index``."""

    index: int
    t_ns: int
    state: Sample
    action: Sample
    images: dict[str, Sample]
    task: str
    fresh: bool
    late_streams: tuple[str, ...]
    environment: Sample | None = None  # with SamplerConfig.environment


@dataclass
class StreamStats:
    messages: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    largest_gap_ns: int = 0
    out_of_order: int = 0
    used: int = 0  # distinct messages that became frames
    late: int = 0  # frames where this stream was older than its max age

    def rate_hz(self) -> float:
        if (
            self.messages < 2
            or self.first_ns is None
            or self.last_ns is None
            or self.last_ns <= self.first_ns
        ):
            return 0.0
        return (self.messages - 1) * NS / (self.last_ns - self.first_ns)


@dataclass(frozen=True)
class EpisodeReport:
    """What an episode really was; ``verdict`` says whether it may enter the dataset."""

    fps: int
    frames: int
    fresh_frames: int
    dropped_frames: int
    real_rate_hz: float
    duration_s: float
    largest_gap_s: float
    largest_gap_stream: str
    first_tick_ns: int = 0  # t_0: frame k was sampled at first_tick_ns + k / fps (stamp clock)
    streams: dict[str, dict[str, float]] = field(default_factory=dict)
    verdict: EpisodeVerdict = EpisodeVerdict.ACCEPTED
    reason: str = ""

    @property
    def accepted(self) -> bool:
        return self.verdict is EpisodeVerdict.ACCEPTED

    def to_dict(self) -> dict[str, Any]:
        return {
            "fps": self.fps,
            "frames": self.frames,
            "fresh_frames": self.fresh_frames,
            "dropped_frames": self.dropped_frames,
            "real_rate_hz": round(self.real_rate_hz, 4),
            "duration_s": round(self.duration_s, 4),
            "largest_gap_s": round(self.largest_gap_s, 4),
            "largest_gap_stream": self.largest_gap_stream,
            "first_tick_ns": self.first_tick_ns,
            "streams": self.streams,
            "verdict": self.verdict.value,
            "reason": self.reason,
        }

    def summary(self) -> str:
        return (
            f"{self.frames} frames ({self.dropped_frames} dropped), real rate {self.real_rate_hz:.2f} Hz "
            f"of {self.fps}, largest gap {self.largest_gap_s * 1000:.0f} ms on {self.largest_gap_stream or '-'}: "
            f"{self.verdict.value}{' (' + self.reason + ')' if self.reason else ''}"
        )


class _Stream:
    def __init__(self, name: str, kind: StreamKind) -> None:
        self.name = name
        self.kind = kind
        self.stamps: deque[int] = deque()
        self.payloads: deque[Any] = deque()
        self.stats = StreamStats()
        self.last_used_stamp: int | None = None

    def add(self, stamp_ns: int, payload: Any) -> None:
        st = self.stats
        st.messages += 1
        if st.first_ns is None:
            st.first_ns = stamp_ns
        if st.last_ns is not None:
            if stamp_ns < st.last_ns:
                st.out_of_order += 1
            else:
                st.largest_gap_ns = max(st.largest_gap_ns, stamp_ns - st.last_ns)
        st.last_ns = stamp_ns if st.last_ns is None else max(st.last_ns, stamp_ns)
        if self.stamps and stamp_ns < self.stamps[-1]:
            i = bisect.bisect_right(self.stamps, stamp_ns)
            self.stamps.insert(i, stamp_ns)
            self.payloads.insert(i, payload)
        else:
            self.stamps.append(stamp_ns)
            self.payloads.append(payload)

    def latest_before(self, limit_ns: int, inclusive: bool) -> Sample | None:
        i = (bisect.bisect_right if inclusive else bisect.bisect_left)(self.stamps, limit_ns)
        if i == 0:
            return None
        return Sample(self.stamps[i - 1], self.payloads[i - 1])

    def prune(self, keep_from_ns: int) -> None:
        # Keep the newest message at or before keep_from_ns: it may still be the latest for the next tick.
        while len(self.stamps) > 1 and self.stamps[1] <= keep_from_ns:
            self.stamps.popleft()
            self.payloads.popleft()


class FrameSampler:
    """Feed messages with :meth:`add`, move the clock with :meth:`advance`, end with :meth:`finish`."""

    def __init__(self, config: SamplerConfig, start_ns: int = 0, task: str = "") -> None:
        self.config = config
        self.start_ns = start_ns
        self._streams: dict[str, _Stream] = {"state": _Stream("state", StreamKind.STATE)}
        for cam in config.cameras:
            self._streams[f"camera/{cam}"] = _Stream(f"camera/{cam}", StreamKind.CAMERA)
        if config.environment:
            self._streams["environment"] = _Stream("environment", StreamKind.ENVIRONMENT)
        self._streams["action"] = _Stream("action", StreamKind.ACTION)
        self._tasks: list[tuple[int, str]] = [(start_ns, task)] if task else []
        self._t0: int | None = None
        self._next_tick = 0
        self.frames = 0
        self.fresh_frames = 0
        self._last_tick_ns: int | None = None
        self._receive_delay_ns = 0  # receive clock minus the newest stamp, at the last advance_received

    # --- input ---

    def add_state(self, stamp_ns: int, payload: Any) -> None:
        self._streams["state"].add(stamp_ns, payload)

    def add_action(self, stamp_ns: int, payload: Any) -> None:
        self._streams["action"].add(stamp_ns, payload)

    def add_environment(self, stamp_ns: int, payload: Any) -> None:
        if "environment" not in self._streams:
            raise KeyError("the environment state is not sampled (SamplerConfig.environment is off)")
        self._streams["environment"].add(stamp_ns, payload)

    def add_image(self, camera: str, stamp_ns: int, payload: Any) -> None:
        key = f"camera/{camera}"
        if key not in self._streams:
            raise KeyError(f"camera {camera!r} is not configured (cameras: {list(self.config.cameras)})")
        self._streams[key].add(stamp_ns, payload)

    def set_task(self, stamp_ns: int, task: str) -> None:
        """The instruction in force from ``stamp_ns`` on (frames take the latest one at their tick)."""
        self._tasks.append((stamp_ns, task))
        self._tasks.sort(key=lambda x: x[0])

    @property
    def started(self) -> bool:
        return self._t0 is not None

    def missing_streams(self) -> list[str]:
        return [name for name, s in self._streams.items() if s.stats.messages == 0]

    # --- output ---

    def _maybe_start(self) -> bool:
        if self._t0 is None:
            firsts = [s.stats.first_ns for s in self._streams.values() if s.kind is not StreamKind.ACTION]
            if any(f is None for f in firsts) or self._streams["action"].stats.messages == 0:
                return False
            self._t0 = max(self.start_ns - self._receive_delay_ns, *(f for f in firsts if f is not None))
        return True

    def _task_at(self, t_ns: int) -> str:
        task = ""
        for stamp, text in self._tasks:
            if stamp > t_ns:
                break
            task = text
        if not task and self._tasks:  # the instruction arrived just after the first tick
            task = self._tasks[0][1]
        return task

    def newest_stamp_ns(self) -> int | None:
        """The newest stamp any stream has delivered (``None`` before the first message)."""
        lasts = [s.stats.last_ns for s in self._streams.values() if s.stats.last_ns is not None]
        return max(lasts) if lasts else None

    def advance_received(self, receive_ns: int) -> list[Frame]:
        """Frames decided once a message received at ``receive_ns`` has been added (rule 5): the clock is
        the newest delivered stamp, capped by ``receive_ns``. Live and offline call this after the same
        messages with the same receive (log) times, so they decide the same ticks with the same data."""
        newest = self.newest_stamp_ns()
        if newest is None:
            return []
        clock = min(receive_ns, newest)
        self._receive_delay_ns = receive_ns - clock
        return self.advance(clock)

    def advance(self, now_ns: int) -> list[Frame]:
        """Frames whose ticks are decided by the clock ``now_ns`` (see the emission rule)."""
        cfg = self.config
        lookahead = int(float(cfg.action_lookahead_s) * NS)  # type: ignore[arg-type]
        return self._emit_until(now_ns - lookahead - int(cfg.max_wait_s * NS), data_driven=True)

    def _complete(self, t: int, lookahead: int) -> bool:
        """Every stream has moved past its reference time: nothing in flight can change tick ``t``."""
        for s in self._streams.values():
            reference = t + lookahead if s.kind is StreamKind.ACTION else t
            last = s.stats.last_ns
            if last is None or (last < reference if s.kind is StreamKind.ACTION else last <= reference):
                return False
        return True

    def _emit_until(self, horizon_ns: int, data_driven: bool = False) -> list[Frame]:
        if not self._maybe_start() or self._t0 is None:
            return []
        cfg = self.config
        lookahead = int(float(cfg.action_lookahead_s) * NS)  # type: ignore[arg-type]
        out: list[Frame] = []
        while True:
            t = self._t0 + self._next_tick * NS // cfg.fps
            if t > horizon_ns and not (data_driven and self._complete(t, lookahead)):
                break
            frame = self._sample(self._next_tick, t, lookahead)
            self._next_tick += 1
            if frame is None:
                continue
            out.append(frame)
        if out:
            keep = out[-1].t_ns - max(cfg.max_age_ns(k) for k in StreamKind) - lookahead
            for s in self._streams.values():
                s.prune(keep)
        return out

    def _sample(self, index: int, t: int, lookahead: int) -> Frame | None:
        picks: dict[str, Sample] = {}
        late: list[str] = []
        for name, s in self._streams.items():
            if s.kind is StreamKind.ACTION:
                pick = s.latest_before(t + lookahead, inclusive=False)
                reference = t + lookahead
            else:
                pick = s.latest_before(t, inclusive=True)
                reference = t
            if pick is None:
                pick = Sample(s.stamps[0], s.payloads[0]) if s.stamps else None
                if pick is None:
                    return None
            repeated = pick.stamp_ns == s.last_used_stamp
            too_old = reference - pick.stamp_ns > self.config.max_age_ns(s.kind) or pick.stamp_ns > reference
            if too_old or (repeated and s.kind is StreamKind.CAMERA):
                late.append(name)
                s.stats.late += 1
            if not repeated:
                s.stats.used += 1
                s.last_used_stamp = pick.stamp_ns
            picks[name] = pick
        self.frames += 1
        if not late:
            self.fresh_frames += 1
        self._last_tick_ns = t
        return Frame(
            index=self.frames - 1,
            t_ns=t,
            state=picks["state"],
            action=picks["action"],
            images={cam: picks[f"camera/{cam}"] for cam in self.config.cameras},
            task=self._task_at(t),
            fresh=not late,
            late_streams=tuple(late),
            environment=picks.get("environment"),
        )

    def finish(self, stop_ns: int) -> tuple[list[Frame], EpisodeReport]:
        """Emit the ticks the data up to ``stop_ns`` decides, and judge the episode. ``stop_ns`` is on the
        clock :meth:`advance_received` was given; it is moved onto the stamps by the delivery delay last seen."""
        lookahead = int(float(self.config.action_lookahead_s) * NS)  # type: ignore[arg-type]
        stop_ns -= self._receive_delay_ns
        frames = self._emit_until(stop_ns - lookahead)
        return frames, self.report(stop_ns)

    def report(self, stop_ns: int | None = None) -> EpisodeReport:
        cfg = self.config
        streams: dict[str, dict[str, float]] = {}
        worst_gap, worst_stream = 0, ""
        for name, s in self._streams.items():
            st = s.stats
            gap = st.largest_gap_ns
            # Silence at the end (a stream that stopped) is a gap too.
            if stop_ns is not None and st.last_ns is not None and self._t0 is not None:
                gap = max(gap, stop_ns - int(float(cfg.action_lookahead_s) * NS) - st.last_ns)  # type: ignore[arg-type]
            streams[name] = {
                "messages": st.messages,
                "rate_hz": round(st.rate_hz(), 3),
                "largest_gap_s": round(gap / NS, 4),
                "late_frames": st.late,
                "distinct_samples": st.used,
                "out_of_order": st.out_of_order,
            }
            if gap > worst_gap:
                worst_gap, worst_stream = gap, name
        frames = self.frames
        rate = cfg.fps * self.fresh_frames / frames if frames else 0.0
        duration = frames / cfg.fps
        verdict, reason = EpisodeVerdict.ACCEPTED, ""
        if frames == 0:
            missing = self.missing_streams()
            verdict = EpisodeVerdict.EMPTY
            reason = f"no frames: streams never received: {missing}" if missing else "no frames"
        elif rate < cfg.fps * (1.0 - cfg.rate_tolerance):
            late = {n: s.stats.late for n, s in self._streams.items() if s.stats.late}
            verdict = EpisodeVerdict.RATE_TOO_LOW
            reason = (
                f"real rate {rate:.2f} Hz is below {cfg.fps} Hz - {cfg.rate_tolerance:.0%}: "
                f"{frames - self.fresh_frames} of {frames} frames had late data {late}"
            )
        elif worst_gap > cfg.max_gap_s * NS:
            verdict = EpisodeVerdict.GAP_TOO_LONG
            reason = f"{worst_stream} went silent for {worst_gap / NS:.3f} s (max_gap {cfg.max_gap_s} s)"
        return EpisodeReport(
            fps=cfg.fps,
            frames=frames,
            fresh_frames=self.fresh_frames,
            dropped_frames=frames - self.fresh_frames,
            real_rate_hz=rate,
            duration_s=duration,
            largest_gap_s=worst_gap / NS,
            largest_gap_stream=worst_stream,
            first_tick_ns=self._t0 or 0,
            streams=streams,
            verdict=verdict,
            reason=reason,
        )


def joint_vector(names: Sequence[str], positions: Sequence[float], wanted: Sequence[str]) -> list[float]:
    """Pick ``wanted`` joints out of a JointState's name/position lists (raises KeyError naming the missing)."""
    if len(names) != len(positions):
        raise ValueError(f"JointState has {len(names)} names but {len(positions)} positions")
    index = {n: i for i, n in enumerate(names)}
    missing = [w for w in wanted if w not in index]
    if missing:
        raise KeyError(f"joints {missing} missing (message has {list(names)})")
    return [float(positions[index[w]]) for w in wanted]
