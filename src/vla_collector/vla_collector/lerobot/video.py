"""Encoding a camera stream into an episode's mp4 (PyAV, on a worker thread), and appending an episode's mp4
to a file that holds earlier episodes (a remux: packets are copied, never re-encoded)."""

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


def _stream_params(stream: av.VideoStream) -> tuple[object, ...]:
    ctx = stream.codec_context
    return (
        ctx.name,
        ctx.width,
        ctx.height,
        ctx.format.name if ctx.format else None,
        bytes(ctx.extradata or b""),
    )


def append_video(first: Path, first_frames: int, second: Path, out: Path, fps: int) -> bool:
    """Write to ``out`` the mp4 of ``first`` (which must hold exactly ``first_frames`` frames) followed by
    ``second``, whose timestamps move on by ``first_frames / fps`` seconds exactly: the episode in
    ``second`` then spans [first_frames / fps, (first_frames + n) / fps) in ``out``.

    Returns False when the two cannot share a file exactly: another codec, size, pixel format or codec
    parameters (extradata: an h264 stream's SPS/PPS), another time base, a time base in which the offset is
    not a whole number of ticks, or ``first`` not holding ``first_frames`` frames. The caller then discards
    ``out`` (it may hold part of a file) and starts a new file instead.
    """
    with av.open(str(first)) as a, av.open(str(second)) as b:
        sa, sb = a.streams.video[0], b.streams.video[0]
        if len(a.streams) != 1 or len(b.streams) != 1 or _stream_params(sa) != _stream_params(sb):
            return False
        tb = sa.time_base
        if tb is None or sb.time_base != tb or sb.start_time not in (None, 0):
            return False
        offset = Fraction(first_frames, fps) / tb
        if offset.denominator != 1 or (sa.frames and sa.frames != first_frames):
            return False
        with av.open(str(out), mode="w", format="mp4") as o:
            so = o.add_stream_from_template(template=sa, opaque=True)
            so.time_base = tb
            copied = 0
            for packet in a.demux(sa):
                if packet.dts is None:  # the demuxer's flush packet
                    continue
                packet.stream = so
                o.mux(packet)
                copied += 1
            if copied != first_frames:
                return False
            shift = int(offset)
            for packet in b.demux(sb):
                if packet.dts is None:
                    continue
                packet.pts = None if packet.pts is None else packet.pts + shift
                packet.dts += shift
                packet.stream = so
                o.mux(packet)
    return True
