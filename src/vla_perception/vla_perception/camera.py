"""The camera core: configuration, a capture thread with pacing, reconnect with backoff, and fps/drop
accounting. No rclpy: the node hands `CameraWorker` a callback that publishes each frame.
"""

from __future__ import annotations

import collections
import enum
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from vla_perception.sources import (
    CaptureSource,
    DirectorySource,
    FrameSource,
    PatternSource,
    ReadStatus,
    SourceError,
    SourceKind,
    guess_kind,
)

PUBLISHED_ENCODINGS = ("rgb8", "bgr8", "mono8")
_CAMERA_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def camera_topics(camera_name: str) -> tuple[str, str]:
    """(image topic, camera_info topic) of a named camera: the workspace convention, one place.

    ``front`` is camera/image_raw and camera/camera_info; any other name N is N_camera/image_raw ... Relative
    names: /camera/image_raw in the root namespace, /arm2/camera/image_raw under ``-r __ns:=/arm2``.
    """
    prefix = "camera" if camera_name == "front" else f"{camera_name}_camera"
    return f"{prefix}/image_raw", f"{prefix}/camera_info"


class CameraState(enum.Enum):
    STARTING = "starting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"  # the source is lost or not there yet; retrying with backoff
    ENDED = "ended"  # a finite source (video or directory without loop) has been played out
    STOPPED = "stopped"


class Level(enum.Enum):
    """Diagnostic level (the values of diagnostic_msgs/DiagnosticStatus)."""

    OK = 0
    WARN = 1
    ERROR = 2


@dataclass(frozen=True)
class CameraConfig:
    name: str = "front"
    source_type: str = "pattern"  # pattern | device | video | directory | stream | auto
    source: str = ""  # device index/path, file, directory or URL (unused for the pattern)
    width: int = 640  # output size; 0 and 0 = whatever the source delivers
    height: int = 480
    fps: float = (
        30.0  # pace of files/directories/pattern; requested from devices; the rate drops count against
    )
    encoding: str = "rgb8"
    frame_id: str = ""  # "" = "<name>_camera_optical_frame"
    loop: bool = True  # video files and image directories start over at the end
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 5.0
    calibration_file: str = ""

    def __post_init__(self) -> None:
        if not _CAMERA_NAME.match(self.name):
            raise ValueError(f"camera name must be lower_snake_case (e.g. front, wrist), got {self.name!r}")
        allowed = [k.value for k in SourceKind] + ["auto"]
        if self.source_type not in allowed:
            raise ValueError(f"source_type must be one of {', '.join(allowed)}, got {self.source_type!r}")
        if self.source_type not in ("pattern", "auto") and not self.source:
            raise ValueError(f"source_type {self.source_type} needs a source (device, path or URL)")
        if self.source_type == "auto" and not self.source:
            raise ValueError("source_type auto needs a source to guess from")
        if self.source_type == "device" and not (self.source.isdigit() or self.source.startswith("/dev/")):
            raise ValueError(f"a device source is an index (0) or a path (/dev/video0), got {self.source!r}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if (self.width == 0) != (self.height == 0):
            raise ValueError(
                f"width and height are both 0 (source size) or both set, got {self.width}x{self.height}"
            )
        if self.kind is SourceKind.PATTERN and self.width == 0:
            raise ValueError("the test pattern needs a width and height")
        if not (math.isfinite(self.fps) and 0.0 < self.fps <= 1000.0):
            raise ValueError(f"fps must be in (0, 1000], got {self.fps}")
        if self.encoding not in PUBLISHED_ENCODINGS:
            raise ValueError(
                f"encoding must be one of {', '.join(PUBLISHED_ENCODINGS)}, got {self.encoding!r}"
            )
        if not (
            0.0 < self.reconnect_initial_s <= self.reconnect_max_s and math.isfinite(self.reconnect_max_s)
        ):
            raise ValueError(
                f"need 0 < reconnect_initial_s <= reconnect_max_s, got {self.reconnect_initial_s}, {self.reconnect_max_s}"
            )

    @property
    def kind(self) -> SourceKind:
        return guess_kind(self.source) if self.source_type == "auto" else SourceKind(self.source_type)

    @property
    def optical_frame(self) -> str:
        return self.frame_id or f"{self.name}_camera_optical_frame"

    def make_source(self) -> FrameSource:
        kind = self.kind
        if kind is SourceKind.PATTERN:
            return PatternSource(self.width, self.height)
        if kind is SourceKind.DIRECTORY:
            return DirectorySource(self.source, loop=self.loop)
        return CaptureSource(
            kind, self.source, width=self.width, height=self.height, fps=self.fps, loop=self.loop
        )


class RateMeter:
    """Frames per second over a sliding window, and drops: gaps longer than 1.5 periods count the
    periods they skipped. A reconnect restarts the gap measure (time offline is not a drop)."""

    def __init__(self, expected_fps: float, window_s: float = 2.0):
        self.period = 1.0 / expected_fps
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()
        self._last: float | None = None
        self.frames = 0
        self.drops = 0

    def record(self, now: float) -> int:
        """Count a frame at monotonic time ``now``; returns the drops this gap revealed."""
        dropped = 0
        if self._last is not None:
            gap = now - self._last
            if gap > 1.5 * self.period:
                dropped = round(gap / self.period) - 1
        self.drops += dropped
        self.frames += 1
        self._last = now
        self._times.append(now)
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        return dropped

    def restart_gap(self) -> None:
        self._last = None
        self._times.clear()

    def fps(self, now: float) -> float:
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], self._times[-1] - self._times[0])
        return (len(self._times) - 1) / span if span > 0 else 0.0


@dataclass(frozen=True)
class CameraStatus:
    state: CameraState
    source: str
    fps: float
    target_fps: float
    frames: int
    drops: int
    skipped: int
    reconnects: int
    last_error: str

    def level(self) -> tuple[Level, str]:
        """Diagnostic level and one-line message."""
        if self.state is CameraState.RECONNECTING:
            return Level.ERROR, f"source lost, reconnecting: {self.last_error}"
        if self.state is CameraState.STARTING:
            return Level.WARN, "starting"
        if self.state is CameraState.ENDED:
            return Level.WARN, "source ended (no loop): no more frames"
        if self.state is CameraState.STOPPED:
            return Level.WARN, "stopped"
        if self.fps < 0.8 * self.target_fps:
            return Level.WARN, f"streaming slow: {self.fps:.1f} of {self.target_fps:g} fps"
        return Level.OK, f"streaming {self.fps:.1f} fps"


FrameCallback = Callable[[np.ndarray, int], None]


class CameraWorker:
    """Runs a source in its own thread: open (retrying with exponential backoff), pace or wait for frames,
    fit them to the configured size, hand them to ``on_frame(frame_rgb, index)``."""

    def __init__(
        self,
        config: CameraConfig,
        on_frame: FrameCallback,
        source_factory: Callable[[], FrameSource] | None = None,
        log: Callable[[Level, str], None] = lambda _level, _message: None,
    ):
        self.config = config
        self._on_frame = on_frame
        self._make_source = source_factory or config.make_source
        self._log = log
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._meter = RateMeter(config.fps)
        self._state = CameraState.STARTING
        self._source_text = ""
        self._skipped = 0
        self._reconnects = 0
        self._last_error = ""
        self._thread = threading.Thread(target=self._run, name=f"camera_{config.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> bool:
        """Stop the thread; True when it ended within the timeout."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def status(self) -> CameraStatus:
        with self._lock:
            return CameraStatus(
                state=self._state,
                source=self._source_text,
                fps=self._meter.fps(time.monotonic()),
                target_fps=self.config.fps,
                frames=self._meter.frames,
                drops=self._meter.drops,
                skipped=self._skipped,
                reconnects=self._reconnects,
                last_error=self._last_error,
            )

    def _set(self, state: CameraState, error: str | None = None) -> None:
        with self._lock:
            self._state = state
            if error is not None:
                self._last_error = error

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        width, height = self.config.width, self.config.height
        if width and (frame.shape[1], frame.shape[0]) != (width, height):
            return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        return frame

    def _run(self) -> None:
        backoff = self.config.reconnect_initial_s
        period = 1.0 / self.config.fps
        source: FrameSource | None = None
        next_tick = time.monotonic()
        index = 0
        try:
            while not self._stop.is_set():
                if source is None:
                    candidate = self._make_source()
                    self._source_text = candidate.describe()
                    try:
                        candidate.open()
                    except SourceError as error:
                        self._set(CameraState.RECONNECTING, str(error))
                        self._log(
                            Level.ERROR,
                            f"cannot open {candidate.describe()}: {error}; retrying in {backoff:.1f} s",
                        )
                        self._stop.wait(backoff)
                        backoff = min(2.0 * backoff, self.config.reconnect_max_s)
                        continue
                    source, backoff = candidate, self.config.reconnect_initial_s
                    self._set(CameraState.STREAMING)
                    self._log(Level.OK, f"streaming from {source.describe()}")
                    next_tick = time.monotonic()
                if not source.live:
                    delay = next_tick - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                    next_tick += period
                    if time.monotonic() - next_tick > period:  # fell behind: skip ticks (counted as drops)
                        next_tick = time.monotonic()
                result = source.read()
                if result.status is ReadStatus.FRAME and source.live:
                    # A live source faster than fps: keep frames on the fps grid (half a period of
                    # jitter allowed), discard the rest; a stall re-syncs the grid.
                    now = time.monotonic()
                    if now < next_tick - 0.5 * period:
                        continue
                    next_tick = max(next_tick + period, now - 0.5 * period)
                if result.status is ReadStatus.FRAME and result.frame is not None:
                    frame = self._fit(result.frame)
                    with self._lock:
                        self._meter.record(time.monotonic())
                    try:
                        self._on_frame(frame, index)
                    except Exception as error:  # a publish failing must not kill the camera thread
                        self._set(self._state, f"frame callback failed: {error!r}")
                        self._log(Level.ERROR, f"frame callback failed: {error!r}")
                    index += 1
                elif result.status is ReadStatus.SKIP:
                    with self._lock:
                        self._skipped += 1
                    self._log(Level.WARN, result.detail)
                elif result.status is ReadStatus.END:
                    self._set(CameraState.ENDED, result.detail)
                    self._log(Level.WARN, result.detail)
                    break
                else:
                    source.close()
                    source = None
                    with self._lock:
                        self._reconnects += 1
                        self._meter.restart_gap()
                    self._set(CameraState.RECONNECTING, result.detail)
                    self._log(Level.ERROR, f"{result.detail}; reconnecting in {backoff:.1f} s")
                    self._stop.wait(backoff)
                    backoff = min(2.0 * backoff, self.config.reconnect_max_s)
        finally:
            if source is not None:
                source.close()
            with self._lock:
                if self._state is not CameraState.ENDED:
                    self._state = CameraState.STOPPED
