"""The action queue between asynchronous chunked inference and a fixed-rate control loop.

Pure Python (numpy only, no rclpy): every method takes ``now`` (seconds, the same clock as the chunks'
stamps: ROS time in the node, sim time under ``use_sim_time``), so tests drive it with a fake clock.

Timing model: ``chunk.actions[k]`` is the target for time ``t_k = stamp + k * dt``. Between ``t_k`` and
``t_{k+1}`` the executor interpolates (linearly, with a cubic through the neighbours, or holds ``actions[k]``), which turns a 10 Hz chunk into
a 20-50 Hz command stream; the last action holds for one more ``dt``, so a chunk covers
``[stamp, stamp + H * dt)`` (plus ``tail_hold_s``, during which its last action holds). A chunk arrives after the model's latency, so its first actions are already
in the past: the executor never plays them, it starts at ``now`` (and counts what it skipped).

Blending (so chunk boundaries don't jerk), chosen by :class:`BlendMode`:

* ``LATEST``: the newest chunk that covers ``now`` wins (the plain action queue).
* ``TEMPORAL_ENSEMBLE``: ACT's temporal ensembling; every chunk that covers ``now`` contributes, weighted
  ``exp(-m * i)`` with ``i = 0`` for the oldest (``m = ensemble_decay``; m > 0 favours older chunks as in
  ACT, m < 0 newer ones).
* ``CROSSFADE``: RTC-style soft transition done at execution time: a new chunk's weight ramps linearly
  from 0 at its arrival to 1 after ``crossfade_s``, the previous blend fading out; once the ramp is done
  older chunks are dropped. (RTC proper also inpaints the overlap at inference, which needs a model that
  supports it; this is the executor's half.)
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from vla_common.policy import ActionChunk


class BlendMode(enum.Enum):
    LATEST = "latest"
    TEMPORAL_ENSEMBLE = "temporal_ensemble"
    CROSSFADE = "crossfade"


class Interpolation(enum.Enum):
    LINEAR = "linear"
    HOLD = "hold"  # zero-order hold: actions[k] until t_{k+1}
    # Catmull-Rom (cubic Hermite, tangents from the neighbouring actions): through every action like LINEAR,
    # but with a continuous velocity. LINEAR changes velocity within one control tick at every action, so at
    # 50 Hz its acceleration peaks are dt/tick = 5x those of the same 10 Hz targets played smoothly, and the
    # safety monitor's acceleration limit scales the command down (the arm then lags the policy).
    CUBIC = "cubic"


class PushStatus(enum.Enum):
    ACCEPTED = "accepted"
    STALE = "stale"  # older than max_chunk_age_s, or wholly in the past on arrival
    OUTDATED_EPOCH = "outdated_epoch"  # computed for an instruction that has since been replaced
    NAME_MISMATCH = "name_mismatch"  # action names differ from the executor's
    OUT_OF_ORDER = "out_of_order"  # stamped before the newest chunk already queued


class TickStatus(enum.Enum):
    ACTION = "action"
    EMPTY = "empty"  # nothing covers now: publish nothing, the robot holds


@dataclass(frozen=True)
class ExecutorConfig:
    blend: BlendMode = BlendMode.CROSSFADE
    interpolation: Interpolation = Interpolation.LINEAR
    ensemble_decay: float = 0.01  # ACT's m, per chunk index
    crossfade_s: float = 0.2
    max_chunk_age_s: float = 1.0  # a chunk whose observation is older than this is refused
    max_chunks: int = 16  # bound on queued chunks (the oldest is dropped beyond it)
    # The last action of a chunk stays valid this long after its nominal end: a single-step model slower
    # than its dt (OpenVLA runs ~6 Hz on a 10 Hz dataset) would otherwise never be played. 0: strict.
    tail_hold_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "blend", BlendMode(self.blend))
        object.__setattr__(self, "interpolation", Interpolation(self.interpolation))
        if not math.isfinite(self.ensemble_decay):
            raise ValueError(f"ensemble_decay must be finite, got {self.ensemble_decay}")
        if not (math.isfinite(self.crossfade_s) and self.crossfade_s >= 0):
            raise ValueError(f"crossfade_s must be >= 0, got {self.crossfade_s}")
        if not (math.isfinite(self.max_chunk_age_s) and self.max_chunk_age_s > 0):
            raise ValueError(f"max_chunk_age_s must be > 0, got {self.max_chunk_age_s}")
        if not (math.isfinite(self.tail_hold_s) and self.tail_hold_s >= 0):
            raise ValueError(f"tail_hold_s must be >= 0, got {self.tail_hold_s}")
        if self.max_chunks < 1:
            raise ValueError(f"max_chunks must be >= 1, got {self.max_chunks}")


@dataclass(frozen=True)
class Tick:
    """What to command at one control tick."""

    status: TickStatus
    action: np.ndarray | None  # [D], None when EMPTY
    chunk_stamp: float  # observation stamp of the newest contributing chunk (nan when EMPTY)
    chunk_age_s: float  # now - chunk_stamp (nan when EMPTY)
    queued_chunks: int
    remaining_s: float  # how far ahead the queue still reaches from now (0 when EMPTY)


@dataclass
class _Queued:
    chunk: ActionChunk
    arrival: float  # executor time at push: CROSSFADE ramps from here
    end: float  # the chunk covers [stamp, end): its nominal end plus tail_hold_s

    @property
    def nominal_end(self) -> float:
        return self.chunk.stamp + self.chunk.horizon * self.chunk.dt


class ActionExecutor:
    """Thread-safe: the inference thread pushes, the control loop ticks."""

    def __init__(
        self,
        names: Sequence[str],
        config: ExecutorConfig | None = None,
        bounds: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        """``bounds``: (lower, upper) per action, e.g. the joints' position limits; every action is clipped
        into them (a finger target a fraction of a mm past its limit is no reason for the monitor to step in).
        """
        if not names:
            raise ValueError("an executor needs at least one action name")
        self.names = tuple(names)
        self.config = config or ExecutorConfig()
        self.bounds: tuple[np.ndarray, np.ndarray] | None = None
        if bounds is not None:
            low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
            if low.shape != (len(self.names),) or high.shape != low.shape or not np.all(low <= high):
                raise ValueError(
                    f"bounds must be (lower, upper) with lower <= upper for {len(self.names)} actions"
                )
            self.bounds = (low, high)
        self._lock = threading.Lock()
        self._queue: list[_Queued] = []
        self._epoch = 0
        self.skipped_actions = 0  # actions that were already in the past when their chunk arrived
        self.refused_chunks = 0

    @property
    def epoch(self) -> int:
        """Bumped by :meth:`clear`; a chunk computed before a clear carries an old epoch and is refused."""
        with self._lock:
            return self._epoch

    def clear(self) -> int:
        """Drop every queued action (a new instruction, disable, stale inputs). Returns the new epoch."""
        with self._lock:
            self._queue.clear()
            self._epoch += 1
            return self._epoch

    def push(self, chunk: ActionChunk, now: float, epoch: int | None = None) -> PushStatus:
        with self._lock:
            status = self._admit(chunk, now, epoch)
            if status is not PushStatus.ACCEPTED:
                self.refused_chunks += 1
                return status
            # Steps before the one now playing are never commanded (the one now playing may be interpolated).
            playing = max(0, math.floor((now - chunk.stamp) / chunk.dt + 1e-9))
            self.skipped_actions += min(playing, chunk.horizon - 1)
            nominal_end = chunk.stamp + chunk.horizon * chunk.dt
            self._queue.append(_Queued(chunk, now, nominal_end + self.config.tail_hold_s))
            del self._queue[: -self.config.max_chunks]
            return status

    def _admit(self, chunk: ActionChunk, now: float, epoch: int | None) -> PushStatus:
        if epoch is not None and epoch != self._epoch:
            return PushStatus.OUTDATED_EPOCH
        if chunk.names != self.names:
            return PushStatus.NAME_MISMATCH
        if now - chunk.stamp > self.config.max_chunk_age_s:
            return PushStatus.STALE
        if chunk.stamp + chunk.horizon * chunk.dt + self.config.tail_hold_s <= now:
            return PushStatus.STALE
        if self._queue and chunk.stamp < self._queue[-1].chunk.stamp:
            return PushStatus.OUT_OF_ORDER
        return PushStatus.ACCEPTED

    def remaining(self, now: float) -> float:
        """Seconds of actions still ahead of ``now`` up to the chunks' nominal ends (0 when empty)."""
        with self._lock:
            return self._remaining(now)

    def tick(self, now: float) -> Tick:
        with self._lock:
            # Actions already in the past go: whole chunks that ended, and (CROSSFADE) chunks faded out.
            # The same tolerance as "covering" below: a chunk that ends at now (to float rounding) is over.
            self._queue = [q for q in self._queue if q.end > now + 1e-9]
            if self.config.blend is BlendMode.CROSSFADE:
                self._drop_faded(now)
            covering = [q for q in self._queue if q.chunk.stamp <= now + 1e-9]
            if not covering:
                return Tick(
                    TickStatus.EMPTY, None, math.nan, math.nan, len(self._queue), self._remaining(now)
                )
            action = self._blend(covering, now)
            if self.bounds is not None:
                action = np.clip(action, *self.bounds)
            stamp = covering[-1].chunk.stamp
            return Tick(TickStatus.ACTION, action, stamp, now - stamp, len(self._queue), self._remaining(now))

    def _remaining(self, now: float) -> float:
        return max([0.0, *(q.nominal_end - now for q in self._queue)])

    def _drop_faded(self, now: float) -> None:
        # Once a chunk's fade-in is complete, everything older than it has no weight left.
        for i in range(len(self._queue) - 1, 0, -1):
            q = self._queue[i]
            if q.chunk.stamp <= now and self._fade_in(q, now) >= 1.0:
                del self._queue[:i]
                return

    def _fade_in(self, q: _Queued, now: float) -> float:
        if self.config.crossfade_s <= 0:
            return 1.0
        return min(1.0, max(0.0, (now - q.arrival) / self.config.crossfade_s))

    def _blend(self, covering: list[_Queued], now: float) -> np.ndarray:
        values = [self._sample(q.chunk, now) for q in covering]
        mode = self.config.blend
        if mode is BlendMode.LATEST or len(values) == 1:
            return values[-1]
        if mode is BlendMode.TEMPORAL_ENSEMBLE:
            weights = np.exp(-self.config.ensemble_decay * np.arange(len(values)))
            return np.average(np.stack(values), axis=0, weights=weights)
        # CROSSFADE: fold oldest to newest, each newer chunk fading in over the blend so far.
        blended = values[0]
        for q, value in zip(covering[1:], values[1:], strict=True):
            alpha = self._fade_in(q, now)
            blended = (1.0 - alpha) * blended + alpha * value
        return blended

    def _sample(self, chunk: ActionChunk, now: float) -> np.ndarray:
        position = (now - chunk.stamp) / chunk.dt
        k = min(max(math.floor(position + 1e-9), 0), chunk.horizon - 1)
        if self.config.interpolation is Interpolation.HOLD or k + 1 >= chunk.horizon:
            return chunk.actions[k].copy()
        frac = min(max(position - k, 0.0), 1.0)
        a = chunk.actions
        if self.config.interpolation is Interpolation.LINEAR:
            return (1.0 - frac) * a[k] + frac * a[k + 1]
        # Catmull-Rom tangents (per step); one-sided at the chunk's ends.
        m0 = (a[k + 1] - a[k - 1]) / 2.0 if k > 0 else a[k + 1] - a[k]
        m1 = (a[k + 2] - a[k]) / 2.0 if k + 2 < chunk.horizon else a[k + 1] - a[k]
        f2, f3 = frac * frac, frac * frac * frac
        return (
            (2 * f3 - 3 * f2 + 1) * a[k]
            + (f3 - 2 * f2 + frac) * m0
            + (-2 * f3 + 3 * f2) * a[k + 1]
            + (f3 - f2) * m1
        )
