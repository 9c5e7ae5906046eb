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


class VideoServer:
    """A local HTTP server for a folder: a real network stream for OpenCV/FFmpeg. stop() and start()
    again on the same port simulate a stream that drops and comes back."""

    def __init__(self, folder: Path, port: int = 0):
        self.folder, self.port = folder, port
        self._server = None
        self._thread = None

    def start(self) -> "VideoServer":
        import functools
        import http.server
        import threading

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        handler = functools.partial(Quiet, directory=str(self.folder))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None


class MjpegServer:
    """A live MJPEG-over-HTTP stream (multipart/x-mixed-replace, what IP cameras serve) of test-pattern
    frames at a fixed rate. stop() and start() again on the same port: a camera that drops and returns."""

    def __init__(self, fps: float = 30.0, width: int = 128, height: int = 96, port: int = 0):
        self.fps, self.width, self.height, self.port = fps, width, height, port
        self._server = None
        self._thread = None

    def start(self) -> "MjpegServer":
        import http.server
        import threading
        import time

        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                counter, start = 0, time.monotonic()
                while owner._server is not None:
                    _, jpeg = cv2.imencode(
                        ".jpg",
                        cv2.cvtColor(render_pattern(counter, owner.width, owner.height), cv2.COLOR_RGB2BGR),
                    )
                    part = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                    try:
                        self.wfile.write(part + jpeg.tobytes() + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    counter += 1
                    time.sleep(max(0.0, start + counter / owner.fps - time.monotonic()))

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self._thread.join(5)
