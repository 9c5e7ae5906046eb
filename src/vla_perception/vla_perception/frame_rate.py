"""Do the frames a node receives keep up with what the camera sends? No rclpy.

A camera driver publishes one ``sensor_msgs/CameraInfo`` beside every image (camera_node and the embedded
simulator do, as ``camera_info_manager`` drivers do). A CameraInfo is a few hundred bytes and still arrives
when the transport drops the large image beside it, so the number of CameraInfo messages received is the
number of frames the camera sent. :class:`FrameRateCheck` counts both over a sliding window of receive times
and says when fewer than :data:`MIN_RECEIVED_RATIO` of the frames arrive. Without CameraInfo it has no
verdict (``UNKNOWN``): it never guesses a camera's rate.

Nodes call :meth:`FrameRateCheck.frame` / :meth:`FrameRateCheck.info` from their subscriptions and
:meth:`FrameRateCheck.update` from their diagnostics timer; ``update`` says when the verdict changed, so a
node logs once per change.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

MIN_RECEIVED_RATIO = 0.9  # below: frames are being lost on the way (WARN)
RECOVERED_RATIO = 0.95  # back to OK only at or above this: a ratio hovering near 0.9 does not flap the log
WINDOW_S = 3.0  # long enough for 30+ frames at 10 Hz, short enough to see a change within a few seconds
MIN_INFOS = 10  # fewer CameraInfo in the window: not enough to judge

# What to do about it, in words (logged with the warning). Fast DDS's default shared-memory segment is 512 KB;
# the process that publishes larger images needs vla_perception's profile (src/vla_perception/README.md).
FIX_HINT = (
    "images over 512 KB (640x480 rgb8 is 921 KB) need the large Fast DDS shared-memory segment in the process "
    "that publishes them: vla-up and ros2 launch vla_bringup set it for every image process; a camera started "
    "by hand needs FASTRTPS_DEFAULT_PROFILES_FILE=<share>/vla_perception/config/fastdds_profile.xml in its "
    "environment (a profile of your own must give shared memory a segment of several frames). If the transport "
    "is not the cause, this process is too busy to take the frames: give it CPU or lower the camera's rate"
)


def camera_info_topic(image_topic: str) -> str | None:
    """The CameraInfo topic beside an image topic (``/camera/image_raw`` -> ``/camera/camera_info``), or None
    where there is no such convention (``/rgb``)."""
    base, _, leaf = image_topic.rpartition("/")
    return f"{base}/camera_info" if leaf.startswith("image") and base else None


class FrameRateStatus(enum.Enum):
    UNKNOWN = "unknown"  # no (or too little) CameraInfo in the window: nothing to compare with
    OK = "ok"
    LOW = "low"  # fewer than MIN_RECEIVED_RATIO of the camera's frames arrive


@dataclass(frozen=True)
class FrameRateReport:
    """One camera's verdict. Rates are per second of receive time over the window; totals since start."""

    camera: str
    status: FrameRateStatus
    received_hz: float
    camera_hz: float  # the rate CameraInfo arrives at: what the camera sends
    ratio: float  # frames / CameraInfo in the window (nan without CameraInfo)
    frames_total: int
    infos_total: int
    reason: str = ""  # why UNKNOWN

    def summary(self) -> str:
        """ "camera front: 15.0 of 30.0 frames/s arrive (50 %)" (or why there is no verdict)."""
        if self.status is FrameRateStatus.UNKNOWN:
            return f"camera {self.camera}: frame rate not checked ({self.reason})"
        return (
            f"camera {self.camera}: {self.received_hz:.1f} of {self.camera_hz:.1f} frames/s arrive "
            f"({100 * self.ratio:.0f} %)"
        )

    def warning(self, image_topic: str) -> str:
        """The log line when frames start dropping: what, how much, and the fix."""
        return (
            f"{self.summary()} on {image_topic}, below {100 * MIN_RECEIVED_RATIO:.0f} % of what the camera sends "
            f"(counted by its CameraInfo): frames are lost before this node. Fix: {FIX_HINT}"
        )

    def diagnostic_values(self) -> dict[str, str]:
        """Key/values for a node's /diagnostics entry, prefixed with the camera name."""
        p = self.camera
        return {
            f"{p}_frame_rate_check": self.status.value + (f": {self.reason}" if self.reason else ""),
            f"{p}_frames_received_hz": _fmt(self.received_hz),
            f"{p}_camera_rate_hz": _fmt(self.camera_hz),
            f"{p}_received_ratio": _fmt(self.ratio, 3),
            f"{p}_frames_received": str(self.frames_total),
            f"{p}_camera_info_received": str(self.infos_total),
        }


def _fmt(value: float, digits: int = 2) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


class FrameRateCheck:
    """Frames received against CameraInfo received, over the last ``window_s`` seconds (monotonic receive
    times, so a paused or slowed simulation clock changes nothing: both counts slow down together)."""

    def __init__(
        self,
        camera: str,
        *,
        window_s: float = WINDOW_S,
        min_ratio: float = MIN_RECEIVED_RATIO,
        recovered_ratio: float = RECOVERED_RATIO,
        min_infos: int = MIN_INFOS,
    ) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive number, got {window_s}")
        if not 0.0 < min_ratio <= recovered_ratio <= 1.0:
            raise ValueError(
                f"need 0 < min_ratio <= recovered_ratio <= 1, got {min_ratio} and {recovered_ratio}"
            )
        if min_infos < 1:
            raise ValueError(f"min_infos must be >= 1, got {min_infos}")
        self.camera = camera
        self.window_s = window_s
        self.min_ratio = min_ratio
        self.recovered_ratio = recovered_ratio
        self.min_infos = min_infos
        self._frames: deque[float] = deque()
        self._infos: deque[float] = deque()
        self.frames_total = 0
        self.infos_total = 0
        self.status = FrameRateStatus.UNKNOWN

    def frame(self, now_s: float) -> None:
        """An image arrived (``now_s``: monotonic seconds)."""
        self._frames.append(now_s)
        self.frames_total += 1

    def info(self, now_s: float) -> None:
        """A CameraInfo arrived."""
        self._infos.append(now_s)
        self.infos_total += 1

    def update(self, now_s: float) -> tuple[FrameRateReport, bool]:
        """The verdict now, and whether it differs from the previous one (log it then)."""
        start = now_s - self.window_s
        for stamps in (self._frames, self._infos):
            while stamps and stamps[0] < start:
                stamps.popleft()
        frames, infos = len(self._frames), len(self._infos)
        # Before the window has filled, rates are over the time since the first CameraInfo in it.
        span = min(self.window_s, now_s - self._infos[0]) if infos else self.window_s
        span = max(span, 1e-3)
        ratio = frames / infos if infos else math.nan
        reason = ""
        if self.infos_total == 0:
            status, reason = FrameRateStatus.UNKNOWN, "no CameraInfo received"
        elif infos < self.min_infos:
            status, reason = FrameRateStatus.UNKNOWN, f"{infos} CameraInfo in the last {self.window_s:g} s"
        elif ratio < self.min_ratio:
            status = FrameRateStatus.LOW
        elif self.status is FrameRateStatus.LOW and ratio < self.recovered_ratio:
            status = FrameRateStatus.LOW  # hysteresis: not recovered yet
        else:
            status = FrameRateStatus.OK
        changed = status is not self.status
        self.status = status
        report = FrameRateReport(
            camera=self.camera,
            status=status,
            received_hz=frames / span,
            camera_hz=infos / span,
            ratio=ratio,
            frames_total=self.frames_total,
            infos_total=self.infos_total,
            reason=reason,
        )
        return report, changed
