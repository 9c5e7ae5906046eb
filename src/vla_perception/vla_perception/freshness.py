"""A thread-safe latest-frame buffer that refuses stale frames.

The subscriber callback calls ``put(frame, stamp_ns)``; the consumer (policy loop, collector tick) calls
``check(max_age_s)`` or ``get(max_age_s)``. Age is measured one of two ways, and the caller says which:

* receipt age (default): monotonic time since ``put`` - immune to clock jumps, right for live cameras;
* stamp age: pass ``now_ns`` (ROS time, e.g. ``node.get_clock().now().nanoseconds``) and the age is
  ``now_ns - stamp_ns`` - the capture age, right under ``use_sim_time`` and when transport delay matters.
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def time_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (e.g. ``msg.header.stamp``) -> int nanoseconds, for ``put``."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class FrameStatus(enum.Enum):
    FRESH = "fresh"
    EMPTY = "empty"  # nothing received yet
    STALE = "stale"  # the newest frame is older than max_age
    FUTURE = "future"  # the stamp is ahead of now by more than the allowed skew: clocks disagree


@dataclass(frozen=True)
class FrameSample(Generic[T]):
    frame: T
    stamp_ns: int  # the frame's own stamp (ROS time of capture)
    seq: int  # 1 for the first frame put, +1 for each one after
    received_monotonic_ns: int
    age_s: float  # as measured by the check that returned this sample


@dataclass(frozen=True)
class FrameCheck(Generic[T]):
    status: FrameStatus
    sample: FrameSample[T] | None  # the newest frame (also when stale, for logging); None when EMPTY
    reason: str  # one line for logs and diagnostics

    @property
    def fresh(self) -> FrameSample[T] | None:
        return self.sample if self.status is FrameStatus.FRESH else None


class LatestFrame(Generic[T]):
    """Holds only the newest frame; counts frames that were overwritten before anyone read them."""

    def __init__(self, max_future_skew_s: float = 0.05, monotonic_ns: Callable[[], int] = time.monotonic_ns):
        if not (math.isfinite(max_future_skew_s) and max_future_skew_s >= 0.0):
            raise ValueError(f"max_future_skew_s must be a finite number >= 0, got {max_future_skew_s}")
        self._max_future_skew_s = max_future_skew_s
        self._monotonic_ns = monotonic_ns
        self._cond = threading.Condition()
        self._frame: T | None = None
        self._has_frame = False
        self._stamp_ns = 0
        self._received_ns = 0
        self._seq = 0
        self._read_seq = 0
        self._overwritten = 0

    def put(self, frame: T, stamp_ns: int) -> int:
        """Store the newest frame; returns its sequence number."""
        if not isinstance(stamp_ns, int) or isinstance(stamp_ns, bool):
            raise TypeError(f"stamp_ns must be an int of nanoseconds, got {type(stamp_ns).__name__}")
        with self._cond:
            if self._has_frame and self._read_seq < self._seq:
                self._overwritten += 1
            self._frame, self._stamp_ns, self._has_frame = frame, stamp_ns, True
            self._received_ns = self._monotonic_ns()
            self._seq += 1
            self._cond.notify_all()
            return self._seq

    def check(self, max_age_s: float, now_ns: int | None = None) -> FrameCheck[T]:
        """The newest frame and whether it may be used; marks it read."""
        if not (math.isfinite(max_age_s) and max_age_s > 0.0):
            raise ValueError(f"max_age_s must be a finite number > 0, got {max_age_s}")
        with self._cond:
            if not self._has_frame:
                return FrameCheck(FrameStatus.EMPTY, None, "no frame received yet")
            if now_ns is None:
                age_s = (self._monotonic_ns() - self._received_ns) / 1e9
                basis = "since receipt"
            else:
                age_s = (now_ns - self._stamp_ns) / 1e9
                basis = "since its stamp"
            sample = FrameSample(self._frame, self._stamp_ns, self._seq, self._received_ns, age_s)  # type: ignore[arg-type]
            self._read_seq = self._seq
        if age_s < -self._max_future_skew_s:
            return FrameCheck(
                FrameStatus.FUTURE, sample, f"frame {sample.seq} is stamped {-age_s:.3f} s in the future"
            )
        if age_s > max_age_s:
            return FrameCheck(
                FrameStatus.STALE,
                sample,
                f"frame {sample.seq} is {age_s:.3f} s old {basis} (max {max_age_s:.3f} s)",
            )
        return FrameCheck(FrameStatus.FRESH, sample, f"frame {sample.seq} is {age_s:.3f} s old {basis}")

    def get(self, max_age_s: float, now_ns: int | None = None) -> FrameSample[T] | None:
        """The newest frame if it is fresh, else None (see `check` for the reason)."""
        return self.check(max_age_s, now_ns).fresh

    def wait_newer(self, seq: int, timeout_s: float) -> bool:
        """Block until a frame with a sequence number above ``seq`` arrives; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._seq > seq, timeout=timeout_s)

    @property
    def seq(self) -> int:
        with self._cond:
            return self._seq

    @property
    def overwritten(self) -> int:
        """Frames replaced before any check read them (the consumer is slower than the camera)."""
        with self._cond:
            return self._overwritten

    def clear(self) -> None:
        """Forget the frame (e.g. after the camera is reconfigured); counters keep running."""
        with self._cond:
            self._frame = None
            self._has_frame = False
