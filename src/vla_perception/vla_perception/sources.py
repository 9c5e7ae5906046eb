"""Frame sources for the camera node: V4L2 devices, video files, image directories, network streams
(all through OpenCV) and the synthetic test pattern. Every source yields HxWx3 uint8 RGB frames.

No rclpy here: `camera.CameraWorker` drives a source, the node only publishes what it produces.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from vla_perception.pattern import render_pattern


class SourceKind(enum.Enum):
    PATTERN = "pattern"
    DEVICE = "device"  # V4L2 index ("0") or path ("/dev/video0")
    VIDEO = "video"  # a video file
    DIRECTORY = "directory"  # a directory of images, played in name order
    STREAM = "stream"  # a network URL OpenCV/FFmpeg can open (rtsp://, http://, udp://, ...)


class ReadStatus(enum.Enum):
    FRAME = "frame"
    SKIP = "skip"  # nothing this time (an unreadable file in a directory); the source is still fine
    END = "end"  # a finite source ran out and does not loop
    ERROR = "error"  # the source is lost: close it and reconnect


@dataclass(frozen=True)
class ReadResult:
    status: ReadStatus
    frame: np.ndarray | None = None
    detail: str = ""


class SourceError(RuntimeError):
    """A source that cannot be opened (missing device, file or directory, unreachable URL)."""


class FrameSource(Protocol):
    live: bool  # True: delivers at its own pace (read blocks); False: the caller paces reads to the fps

    def open(self) -> None: ...
    def read(self) -> ReadResult: ...
    def close(self) -> None: ...
    def describe(self) -> str: ...


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def guess_kind(source: str) -> SourceKind:
    """The kind of a source string: 'pattern', a device index or /dev/video*, a URL, a directory, else a video file."""
    if source == "pattern":
        return SourceKind.PATTERN
    if source.isdigit() or source.startswith("/dev/video"):
        return SourceKind.DEVICE
    if _URL.match(source):
        return SourceKind.STREAM
    if os.path.isdir(source):
        return SourceKind.DIRECTORY
    return SourceKind.VIDEO


def to_rgb(frame: np.ndarray) -> np.ndarray:
    """What OpenCV delivers (BGR, BGRA or grey; 8 or 16 bit) -> HxWx3 uint8 RGB."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise ValueError(f"unsupported frame dtype {frame.dtype}")
    if frame.ndim == 2 or frame.shape[2] == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


class PatternSource:
    """The moving test pattern with its frame counter (see `pattern`)."""

    live = False

    def __init__(self, width: int, height: int):
        render_pattern(0, width, height)  # fail at construction on a size the pattern cannot draw
        self.width, self.height = width, height
        self.counter = 0

    def open(self) -> None:
        pass

    def read(self) -> ReadResult:
        frame = render_pattern(self.counter % 2**32, self.width, self.height)
        self.counter += 1
        return ReadResult(ReadStatus.FRAME, frame)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"test pattern {self.width}x{self.height}"


class CaptureSource:
    """cv2.VideoCapture over a V4L2 device, a video file or a network stream."""

    def __init__(
        self,
        kind: SourceKind,
        target: str,
        *,
        width: int = 0,
        height: int = 0,
        fps: float = 0.0,
        loop: bool = True,
    ):
        if kind not in (SourceKind.DEVICE, SourceKind.VIDEO, SourceKind.STREAM):
            raise ValueError(f"CaptureSource cannot open a {kind.value} source")
        self.kind, self.target, self.loop = kind, target, loop
        self.width, self.height, self.fps = width, height, fps
        self.live = kind is not SourceKind.VIDEO
        self._capture: cv2.VideoCapture | None = None

    def open(self) -> None:
        if self.kind is SourceKind.VIDEO and not os.path.isfile(self.target):
            raise SourceError(f"video file {self.target!r} does not exist")
        if self.kind is SourceKind.DEVICE:
            device: int | str = int(self.target) if self.target.isdigit() else self.target
            if isinstance(device, str) and not os.path.exists(device):
                raise SourceError(f"camera device {device!r} does not exist")
            capture = cv2.VideoCapture(device, cv2.CAP_V4L2)
            if self.width and self.height:
                capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
                capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
            if self.fps:
                capture.set(cv2.CAP_PROP_FPS, self.fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
        else:
            capture = cv2.VideoCapture(self.target, cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"OpenCV could not open {self.describe()}")
        self._capture = capture

    def read(self) -> ReadResult:
        if self._capture is None:
            return ReadResult(ReadStatus.ERROR, detail="read before open")
        ok, frame = self._capture.read()
        if ok and frame is not None:
            return ReadResult(ReadStatus.FRAME, to_rgb(frame))
        if self.kind is not SourceKind.VIDEO:
            return ReadResult(ReadStatus.ERROR, detail=f"{self.describe()} stopped delivering frames")
        if not self.loop:
            return ReadResult(ReadStatus.END, detail=f"end of {self.target}")
        if not os.path.isfile(self.target):
            return ReadResult(ReadStatus.ERROR, detail=f"video file {self.target!r} disappeared")
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        ok, frame = self._capture.read()
        if ok and frame is not None:
            return ReadResult(ReadStatus.FRAME, to_rgb(frame))
        return ReadResult(ReadStatus.ERROR, detail=f"could not rewind {self.target}")

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def describe(self) -> str:
        return f"{self.kind.value} {self.target}"


class DirectorySource:
    """Images of a directory in name order; rescanned at every pass, so new files join the loop."""

    live = False

    def __init__(self, path: str, loop: bool = True):
        self.path, self.loop = path, loop
        self._files: list[str] = []
        self._index = 0

    def _scan(self) -> list[str]:
        try:
            names = sorted(n for n in os.listdir(self.path) if n.lower().endswith(IMAGE_SUFFIXES))
        except OSError as error:
            raise SourceError(f"image directory {self.path!r} cannot be listed: {error.strerror}") from None
        if not names:
            raise SourceError(f"image directory {self.path!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return [os.path.join(self.path, n) for n in names]

    def open(self) -> None:
        self._files = self._scan()
        self._index = 0

    def read(self) -> ReadResult:
        if self._index >= len(self._files):
            if not self.loop:
                return ReadResult(
                    ReadStatus.END, detail=f"played all {len(self._files)} images of {self.path}"
                )
            try:
                self._files = self._scan()
            except SourceError as error:
                return ReadResult(ReadStatus.ERROR, detail=str(error))
            self._index = 0
        path = self._files[self._index]
        self._index += 1
        frame = cv2.imread(path, cv2.IMREAD_COLOR)
        if frame is not None:
            return ReadResult(ReadStatus.FRAME, to_rgb(frame))
        if not os.path.isdir(self.path):
            return ReadResult(ReadStatus.ERROR, detail=f"image directory {self.path!r} disappeared")
        return ReadResult(ReadStatus.SKIP, detail=f"could not read image {path}")

    def close(self) -> None:
        self._files = []

    def describe(self) -> str:
        return f"directory {self.path}"
