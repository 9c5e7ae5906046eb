"""Encoding a camera stream into an episode's mp4 (PyAV, on a worker thread)."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np
from vla_common.manifest import CameraSpec

from vla_collector.lerobot.errors import DatasetWriteError, disk_error
from vla_collector.lerobot.metadata import VideoCodecConfig


class VideoEncoder:
    """One camera's mp4, encoded on a worker thread so ``add_frame`` returns at once."""

    def __init__(self, path: Path, cam: CameraSpec, fps: int, video: VideoCodecConfig) -> None:
        self.path = path
        self.cam = cam
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per stream otherwise; errors only
        self._container = av.open(str(path), mode="w", format="mp4")
        self._stream = cast(
            "av.VideoStream",
            self._container.add_stream(video.codec, rate=fps, options=video.encoder_options()),
        )
        self._stream.width = cam.width
        self._stream.height = cam.height
        self._stream.pix_fmt = video.pix_fmt
        self._stream.codec_context.time_base = Fraction(1, fps)
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=64)
        self._error: BaseException | None = None
        self._count = 0
        self._thread = threading.Thread(target=self._run, name=f"encode-{cam.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        drained = False
        try:
            while (rgb := self._queue.get()) is not None:
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = self._count
                self._count += 1
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
            drained = True
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except BaseException as e:  # reported by close(); the thread must not die silently
            self._error = e
            with contextlib.suppress(Exception):
                self._container.close()
            while not drained and self._queue.get() is not None:  # unblock the producer
                pass

    def put(self, rgb: np.ndarray) -> None:
        if self._error is not None:
            raise DatasetWriteError(f"encoding camera {self.cam.name!r} failed: {self._error}")
        self._queue.put(rgb)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            if isinstance(self._error, OSError):
                raise disk_error(self._error, f"encoding camera {self.cam.name!r}")
            raise DatasetWriteError(f"encoding camera {self.cam.name!r} failed: {self._error}")
