"""camera_node as a real process, observed through real topics: pattern, video file, reconnects, bad config."""

import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from helpers import write_pattern_images, write_pattern_video
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from vla_perception.calibration import load_calibration, save_calibration
from vla_perception.camera import camera_topics
from vla_perception.codec import image_to_rgb8
from vla_perception.pattern import read_counter

pytestmark = pytest.mark.ros
CONFIG = os.path.join(os.path.dirname(__file__), "..", "config")
EXAMPLE_CALIBRATION = os.path.join(CONFIG, "calibration_example.yaml")


def camera_command(*params):
    exe = shutil.which("camera_node")
    base = [exe] if exe else [sys.executable, "-m", "vla_perception.camera_node"]
    args = ["--ros-args", "--log-level", "warn"]
    for key, value in params:
        args += ["-p", f"{key}:={value}"]
    return base + args


class CameraProcess:
    def __init__(self, *params, node_name="test_camera", params_file=None):
        command = camera_command(*params)
        extra = ["-r", f"__node:={node_name}"] + (["--params-file", params_file] if params_file else [])
        at = command.index("--ros-args") + 1
        command[at:at] = extra
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError("camera_node did not exit within 10 s of SIGINT") from None
        return self.proc.returncode, self.proc.stdout.read() if self.proc.stdout else ""


class Probe:
    """Subscribes to one camera's topics and /diagnostics, spinning in a background thread."""

    def __init__(self, camera_name):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("camera_node_test_probe", context=self.context)
        self.lock = threading.RLock()
        self.images, self.infos, self.diagnostics = [], [], []
        image_topic, info_topic = camera_topics(camera_name)
        self.node.create_subscription(Image, image_topic, self._add(self.images), qos_profile_sensor_data)
        self.node.create_subscription(CameraInfo, info_topic, self._add(self.infos), qos_profile_sensor_data)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._add(self.diagnostics), 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _add(self, bucket):
        def callback(msg):
            with self.lock:
                bucket.append(msg)

        return callback

    def wait(self, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate():
                    return True
            time.sleep(0.05)
        return False

    def camera_status(self, camera_name):
        """The newest diagnostic status of this camera, or None."""
        with self.lock:
            for array in reversed(self.diagnostics):
                for status in array.status:
                    if status.name.endswith(f"camera {camera_name}"):
                        return status
        return None

    def close(self):
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(5.0)


def values(status: DiagnosticStatus):
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture
def probe_factory():
    made = []

    def make(camera_name):
        made.append(Probe(camera_name))
        return made[-1]

    yield make
    for probe in made:
        probe.close()


@pytest.fixture
def camera_factory():
    made = []

    def make(*params, node_name="test_camera", params_file=None):
        made.append(CameraProcess(*params, node_name=node_name, params_file=params_file))
        return made[-1]

    yield make
    for camera in made:
        camera.stop()


def test_pattern_publishes_images_info_and_diagnostics(probe_factory, camera_factory):
    probe = probe_factory("front")
    camera = camera_factory(("width", 160), ("height", 120), ("fps", 20), node_name="front_camera")
    assert probe.wait(lambda: len(probe.images) >= 15 and len(probe.infos) >= 15), camera.stop()[1]
    with probe.lock:
        images, infos = list(probe.images), list(probe.infos)
    first = images[0]
    assert (first.width, first.height, first.encoding, first.step) == (160, 120, "rgb8", 480)
    assert first.header.frame_id == "front_camera_optical_frame"
    counters = [read_counter(image_to_rgb8(m)) for m in images]
    assert counters == sorted(counters) and len(set(counters)) == len(counters)
    assert len(counters) >= 0.8 * (counters[-1] - counters[0] + 1)  # best effort on a busy machine: few gaps
    image_stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in images}
    assert any((i.header.stamp.sec, i.header.stamp.nanosec) in image_stamps for i in infos)
    assert (infos[0].width, infos[0].height) == (160, 120) and not any(infos[0].k)  # uncalibrated
    assert probe.wait(
        lambda: (
            probe.camera_status("front") is not None and values(probe.camera_status("front"))["frames"] != "0"
        )
    )
    assert probe.wait(lambda: float(values(probe.camera_status("front"))["fps"]) > 10.0, timeout=10.0)
    status = probe.camera_status("front")
    assert status.name == "front_camera: camera front" and status.level != DiagnosticStatus.ERROR
    assert values(status)["state"] == "streaming" and values(status)["source"] == "test pattern 160x120"
    returncode, output = camera.stop()
    assert returncode == 0, output


def test_video_file_with_calibration_and_bgr8(tmp_path, probe_factory, camera_factory):
    video = write_pattern_video(tmp_path / "clip.mp4", frames=8, width=128, height=96)
    calibration = load_calibration(EXAMPLE_CALIBRATION)
    calibration = type(calibration)(**{**calibration.__dict__, "width": 128, "height": 96})
    save_calibration(calibration, tmp_path / "wrist.yaml")
    probe = probe_factory("wrist")
    camera = camera_factory(
        ("camera_name", "wrist"),
        ("source_type", "video"),
        ("source", str(video)),
        ("width", 0),
        ("height", 0),
        ("fps", 30.0),
        ("encoding", "bgr8"),
        ("calibration_file", str(tmp_path / "wrist.yaml")),
        node_name="wrist_camera",
    )
    assert probe.wait(lambda: len(probe.images) >= 20 and len(probe.infos) >= 1), camera.stop()[1]
    with probe.lock:
        images, info = list(probe.images), probe.infos[-1]
    assert images[0].encoding == "bgr8" and (images[0].width, images[0].height) == (128, 96)
    counters = [read_counter(image_to_rgb8(m)) for m in images]
    assert set(counters) == set(range(8))  # every frame of the file, looped
    wraps = sum(1 for a, b in itertools.pairwise(counters) if b < a)
    assert wraps >= 1
    assert (info.width, info.height) == (128, 96) and info.k[0] == pytest.approx(calibration.k[0])
    assert info.header.frame_id == "wrist_camera_optical_frame"
    assert probe.wait(lambda: probe.camera_status("wrist") is not None)
    assert values(probe.camera_status("wrist"))["calibrated"] == "true"


def test_directory_source_reconnects_after_it_disappears(tmp_path, probe_factory, camera_factory):
    folder = write_pattern_images(tmp_path / "frames", range(5), width=96, height=72)
    parked = tmp_path / "parked"
    probe = probe_factory("dirtest")
    camera = camera_factory(
        ("camera_name", "dirtest"),
        ("source_type", "directory"),
        ("source", str(folder)),
        ("width", 0),
        ("height", 0),
        ("fps", 20.0),
        ("encoding", "mono8"),
        ("reconnect_initial_s", 0.1),
        ("reconnect_max_s", 0.4),
        ("diagnostics_period_s", 0.2),
        node_name="dirtest_camera",
    )
    assert probe.wait(lambda: len(probe.images) >= 5), camera.stop()[1]
    assert probe.images[0].encoding == "mono8"
    folder.rename(parked)
    assert probe.wait(
        lambda: (s := probe.camera_status("dirtest")) is not None and s.level == DiagnosticStatus.ERROR
    )
    lost = probe.camera_status("dirtest")
    assert values(lost)["state"] == "reconnecting" and "reconnecting" in lost.message
    with probe.lock:
        count_when_lost = len(probe.images)
    time.sleep(0.6)
    with probe.lock:
        assert len(probe.images) <= count_when_lost + 1  # at most one frame in flight
        resumed_from = len(probe.images)
    parked.rename(folder)
    assert probe.wait(lambda: len(probe.images) >= resumed_from + 5)
    assert probe.wait(lambda: values(probe.camera_status("dirtest"))["state"] == "streaming")
    assert int(values(probe.camera_status("dirtest"))["reconnects"]) >= 1


def test_bad_configuration_exits_with_a_clear_error():
    result = subprocess.run(
        camera_command(("encoding", "yuv422")), capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 2
    assert "refusing to start" in result.stderr + result.stdout
    assert "encoding must be one of rgb8, bgr8, mono8" in result.stderr + result.stdout


def test_calibration_size_mismatch_exits_with_a_clear_error():
    result = subprocess.run(
        camera_command(("width", 320), ("height", 240), ("calibration_file", EXAMPLE_CALIBRATION)),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "is for 640x480, the camera outputs 320x240" in result.stderr + result.stdout


def test_shipped_params_file_selects_the_camera_by_node_name(probe_factory, camera_factory):
    probe = probe_factory("wrist")
    camera = camera_factory(node_name="wrist_camera", params_file=os.path.join(CONFIG, "cameras.yaml"))
    assert probe.wait(lambda: len(probe.images) >= 3), camera.stop()[1]
    first = probe.images[0]
    assert (first.width, first.height, first.header.frame_id) == (320, 240, "wrist_camera_optical_frame")
