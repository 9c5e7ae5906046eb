"""Fake-input factories for the camera tests: real files written by the test itself."""

from pathlib import Path

import av
import cv2
import numpy as np
from vla_perception.pattern import render_pattern


def write_pattern_video(path: Path, frames: int, width: int = 128, height: int = 96, fps: int = 30) -> Path:
    """An H.264 video (PyAV) of test-pattern frames 0..frames-1; near-lossless so counters decode."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "1", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        for counter in range(frames):
            frame = av.VideoFrame.from_ndarray(render_pattern(counter, width, height), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def write_pattern_images(folder: Path, counters, width: int = 128, height: int = 96) -> Path:
    """PNG files of test-pattern frames, named in play order."""
    folder.mkdir(parents=True, exist_ok=True)
    for counter in counters:
        bgr = cv2.cvtColor(render_pattern(counter, width, height), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(folder / f"frame_{counter:05d}.png"), bgr):
            raise OSError(f"could not write {folder}")
    return folder


def solid(value: int, width: int = 32, height: int = 24) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)
