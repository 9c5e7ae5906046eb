"""The camera core: config validation, rate/drop accounting, the worker's pacing and reconnects."""

import itertools
import threading
import time

import pytest
from helpers import MjpegServer, write_pattern_images, write_pattern_video
from vla_perception.camera import (
    CameraConfig,
    CameraState,
    CameraStatus,
    CameraWorker,
    Level,
    RateMeter,
    camera_topics,
)
from vla_perception.pattern import read_counter
from vla_perception.sources import SourceKind


class Collector:
    def __init__(self):
        self.frames = []
        self.event = threading.Event()
        self.want = 0

    def __call__(self, frame, index):
        self.frames.append((index, frame))
        if len(self.frames) >= self.want:
            self.event.set()

    def wait_for(self, count, timeout=10.0):
        self.want = len(self.frames) + count
        self.event.clear()
        return self.event.wait(timeout) or len(self.frames) >= self.want


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_camera_topics_convention():
    # relative: /camera/image_raw in the root namespace (the default graph), /arm2/... in /arm2
    assert camera_topics("front") == ("camera/image_raw", "camera/camera_info")
    assert camera_topics("wrist") == ("wrist_camera/image_raw", "wrist_camera/camera_info")


def test_config_defaults_and_frame_id():
    config = CameraConfig()
    assert config.kind is SourceKind.PATTERN and config.optical_frame == "front_camera_optical_frame"
    assert CameraConfig(name="wrist", frame_id="wrist_link").optical_frame == "wrist_link"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Front Cam"}, "lower_snake_case"),
        ({"source_type": "webcam"}, "source_type must be one of"),
        ({"source_type": "video"}, "needs a source"),
        ({"source_type": "auto"}, "needs a source"),
        ({"source_type": "device", "source": "cam0"}, "index .0. or a path"),
        ({"width": -1}, "width must be an int >= 0"),
        ({"width": 0}, "both 0"),
        ({"width": 0, "height": 0}, "test pattern needs a width"),
        ({"fps": 0.0}, "fps must be in"),
        ({"fps": float("nan")}, "fps must be in"),
        ({"encoding": "yuv422"}, "encoding must be one of"),
        ({"reconnect_initial_s": 10.0, "reconnect_max_s": 1.0}, "reconnect_initial_s <= reconnect_max_s"),
    ],
)
def test_config_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CameraConfig(**kwargs)


def test_auto_kind_from_source(tmp_path):
    assert CameraConfig(source_type="auto", source=str(tmp_path)).kind is SourceKind.DIRECTORY
    assert CameraConfig(source_type="auto", source="rtsp://x/y").kind is SourceKind.STREAM


def test_rate_meter_counts_gaps_as_drops_and_measures_fps():
    meter = RateMeter(expected_fps=10.0)
    for t in (0.0, 0.1, 0.2, 0.5, 0.6):  # 0.3 and 0.4 missing
        meter.record(t)
    assert meter.drops == 2 and meter.frames == 5
    assert meter.fps(0.6) == pytest.approx(4 / 0.6)
    meter.restart_gap()
    meter.record(5.0)  # after a reconnect: no drops for the time offline
    assert meter.drops == 2
    assert meter.fps(10.0) == 0.0


def test_status_levels():
    base = {
        "source": "s",
        "fps": 30.0,
        "target_fps": 30.0,
        "frames": 1,
        "drops": 0,
        "skipped": 0,
        "reconnects": 0,
    }
    ok = CameraStatus(state=CameraState.STREAMING, last_error="", **base)
    assert ok.level()[0] is Level.OK
    slow = CameraStatus(state=CameraState.STREAMING, last_error="", **{**base, "fps": 10.0})
    assert slow.level()[0] is Level.WARN and "slow" in slow.level()[1]
    lost = CameraStatus(state=CameraState.RECONNECTING, last_error="gone", **base)
    assert lost.level() == (Level.ERROR, "source lost, reconnecting: gone")
    assert CameraStatus(state=CameraState.ENDED, last_error="", **base).level()[0] is Level.WARN


def test_worker_paces_pattern_and_counts():
    sink = Collector()
    worker = CameraWorker(CameraConfig(width=160, height=120, fps=50.0), sink)
    start = time.monotonic()
    worker.start()
    try:
        assert sink.wait_for(25)
        elapsed = time.monotonic() - start
    finally:
        assert worker.stop()
    counters = [read_counter(frame) for _, frame in sink.frames]
    assert counters == list(range(len(counters)))
    assert elapsed >= 24 / 50.0  # paced, not as fast as possible
    status = worker.status()
    assert status.state is CameraState.STOPPED and status.frames == len(sink.frames)


def test_worker_resizes_to_configured_size(tmp_path):
    folder = write_pattern_images(tmp_path / "imgs", [0], width=128, height=96)
    sink = Collector()
    worker = CameraWorker(
        CameraConfig(source_type="directory", source=str(folder), width=64, height=48, fps=50.0), sink
    )
    worker.start()
    try:
        assert sink.wait_for(2)
    finally:
        worker.stop()
    assert sink.frames[0][1].shape == (48, 64, 3)


def test_worker_keeps_source_size_when_zero(tmp_path):
    path = write_pattern_video(tmp_path / "clip.mp4", frames=3, width=128, height=96)
    sink = Collector()
    worker = CameraWorker(
        CameraConfig(source_type="video", source=str(path), width=0, height=0, fps=100.0), sink
    )
    worker.start()
    try:
        assert sink.wait_for(2)
    finally:
        worker.stop()
    assert sink.frames[0][1].shape == (96, 128, 3)


def test_worker_video_without_loop_ends(tmp_path):
    path = write_pattern_video(tmp_path / "clip.mp4", frames=4)
    sink = Collector()
    worker = CameraWorker(
        CameraConfig(source_type="video", source=str(path), width=0, height=0, fps=100.0, loop=False), sink
    )
    worker.start()
    try:
        assert wait_until(lambda: worker.status().state is CameraState.ENDED)
    finally:
        worker.stop()
    assert [read_counter(f) for _, f in sink.frames] == [0, 1, 2, 3]
    assert worker.status().state is CameraState.ENDED


def test_worker_reconnects_when_directory_disappears_and_returns(tmp_path):
    folder = write_pattern_images(tmp_path / "imgs", [0, 1, 2])
    parked = tmp_path / "parked"
    sink = Collector()
    logs = []
    config = CameraConfig(
        source_type="directory",
        source=str(folder),
        width=0,
        height=0,
        fps=50.0,
        reconnect_initial_s=0.05,
        reconnect_max_s=0.2,
    )
    worker = CameraWorker(config, sink, log=lambda level, message: logs.append((level, message)))
    worker.start()
    try:
        assert sink.wait_for(3)
        folder.rename(parked)
        assert wait_until(lambda: worker.status().state is CameraState.RECONNECTING)
        lost = worker.status()
        assert lost.reconnects >= 1 and (
            "disappeared" in lost.last_error or "cannot be listed" in lost.last_error
        )
        time.sleep(0.5)  # several failed attempts with backoff
        frames_while_lost = len(sink.frames)
        time.sleep(0.2)
        assert len(sink.frames) == frames_while_lost
        parked.rename(folder)
        assert sink.wait_for(3)
        assert worker.status().state is CameraState.STREAMING
    finally:
        assert worker.stop()
    assert any(level is Level.ERROR and "cannot open" in message for level, message in logs)
    assert sum(1 for level, message in logs if level is Level.OK and "streaming from" in message) >= 2


def test_worker_retries_a_source_missing_at_start(tmp_path):
    path = tmp_path / "late.mp4"
    sink = Collector()
    config = CameraConfig(
        source_type="video",
        source=str(path),
        width=0,
        height=0,
        fps=100.0,
        reconnect_initial_s=0.05,
        reconnect_max_s=0.1,
    )
    worker = CameraWorker(config, sink)
    worker.start()
    try:
        assert wait_until(lambda: worker.status().state is CameraState.RECONNECTING)
        write_pattern_video(tmp_path / "tmp.mp4", frames=3).rename(path)  # appears atomically
        assert sink.wait_for(3)
    finally:
        worker.stop()


def test_worker_survives_a_failing_callback():
    calls = []

    def flaky(frame, index):
        calls.append(index)
        if index == 0:
            raise RuntimeError("publisher gone")

    worker = CameraWorker(CameraConfig(width=64, height=48, fps=100.0), flaky)
    worker.start()
    try:
        assert wait_until(lambda: len(calls) >= 3)
    finally:
        worker.stop()
    assert "publisher gone" in worker.status().last_error


def test_worker_stops_promptly_while_waiting_to_reconnect(tmp_path):
    config = CameraConfig(
        source_type="directory",
        source=str(tmp_path / "never"),
        width=0,
        height=0,
        reconnect_initial_s=5.0,
        reconnect_max_s=5.0,
    )
    worker = CameraWorker(config, lambda f, i: None)
    worker.start()
    assert wait_until(lambda: worker.status().state is CameraState.RECONNECTING)
    start = time.monotonic()
    assert worker.stop(timeout_s=2.0)
    assert time.monotonic() - start < 1.0


def test_worker_reconnects_to_a_network_stream_that_goes_away_and_returns():
    server = MjpegServer(fps=30.0).start()
    sink = Collector()
    config = CameraConfig(
        source_type="stream",
        source=server.url,
        width=0,
        height=0,
        fps=30.0,
        reconnect_initial_s=0.05,
        reconnect_max_s=0.2,
    )
    worker = CameraWorker(config, sink)
    worker.start()
    try:
        assert sink.wait_for(3)
        server.stop()  # the camera goes away: reads fail, reconnect attempts fail
        assert wait_until(lambda: worker.status().state is CameraState.RECONNECTING)
        assert wait_until(lambda: "could not open" in worker.status().last_error)
        frames_while_lost = len(sink.frames)
        server.start()  # back on the same port
        assert sink.wait_for(3)
        assert worker.status().state is CameraState.STREAMING
    finally:
        worker.stop()
        server.stop()
    assert worker.status().reconnects >= 1
    resumed = [read_counter(f) for _, f in sink.frames[frames_while_lost:]]
    assert resumed[0] < 10  # a fresh stream (the server restarts its counter), not stale buffered frames


def test_worker_throttles_a_live_source_faster_than_fps():
    server = MjpegServer(fps=60.0).start()
    sink = Collector()
    config = CameraConfig(source_type="stream", source=server.url, width=0, height=0, fps=20.0)
    worker = CameraWorker(config, sink)
    worker.start()
    try:
        assert sink.wait_for(12)
    finally:
        worker.stop()
        server.stop()
    counters = [read_counter(f) for _, f in sink.frames]
    steps = [b - a for a, b in itertools.pairwise(counters)]
    assert 2 <= sorted(steps)[len(steps) // 2] <= 4  # median step ~3: every third frame of a 60 Hz stream
    assert worker.status().drops <= 2
