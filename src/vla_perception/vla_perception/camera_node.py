"""camera_node: one camera (named by the camera_name parameter) -> sensor_msgs/Image + CameraInfo.

One node per camera: a stalled USB driver or a slow decoder then cannot hold back the other camera, and
each process gets its own GIL. Run several with their own names, e.g.
  camera_node --ros-args -r __node:=front_camera --params-file config/cameras.yaml
  camera_node --ros-args -r __node:=wrist_camera --params-file config/cameras.yaml
Topics follow `camera.camera_topics(camera_name)` (front: /camera/image_raw, /camera/camera_info;
wrist: /wrist_camera/...) and are remappable as usual.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from vla_common.node import declare_parameters, run_node

from vla_perception.calibration import CalibrationError, load_calibration, uncalibrated_camera_info
from vla_perception.camera import CameraConfig, CameraWorker, Level, camera_topics
from vla_perception.codec import numpy_to_image

PARAMETERS: dict[str, tuple[Any, str]] = {
    "camera_name": (
        "front",
        "camera name used downstream (front, wrist); sets the topics and the frame_id default",
    ),
    "source_type": ("pattern", "pattern | device | video | directory | stream | auto (guess from source)"),
    "source": ("", "device index or /dev/videoN, video file, image directory, or stream URL"),
    "width": (640, "output width in pixels; 0 with height 0 keeps the source's size"),
    "height": (480, "output height in pixels; 0 with width 0 keeps the source's size"),
    "fps": (
        30.0,
        "frame rate: pace of pattern/files/directories, requested from devices, the rate drops count against",
    ),
    "encoding": ("rgb8", "published encoding: rgb8 | bgr8 | mono8"),
    "frame_id": ("", "header.frame_id; empty = <camera_name>_camera_optical_frame"),
    "loop": (True, "video files and image directories start over at their end"),
    "reconnect_initial_s": (0.5, "first wait before reopening a lost source; doubles per failure"),
    "reconnect_max_s": (5.0, "longest wait between reconnect attempts"),
    "calibration_file": ("", "camera_calibration_parsers YAML; empty = uncalibrated CameraInfo (zeros)"),
    "reliability": ("best_effort", "image QoS reliability: best_effort (sensor data) | reliable"),
    "qos_depth": (5, "image and camera_info QoS history depth"),
    "diagnostics_period_s": (1.0, "period of /diagnostics reports"),
}


def _encode(frame_rgb: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "bgr8":
        return cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    if encoding == "mono8":
        return cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
    return frame_rgb


class CameraNode(Node):
    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__("camera_node", **node_kwargs)
        p = declare_parameters(self, PARAMETERS, floats_take_ints=True)  # -p fps:=15 works too
        self.config = CameraConfig(
            name=p["camera_name"],
            source_type=p["source_type"],
            source=p["source"],
            width=p["width"],
            height=p["height"],
            fps=float(p["fps"]),
            encoding=p["encoding"],
            frame_id=p["frame_id"],
            loop=p["loop"],
            reconnect_initial_s=float(p["reconnect_initial_s"]),
            reconnect_max_s=float(p["reconnect_max_s"]),
            calibration_file=p["calibration_file"],
        )
        self.calibration = None
        if self.config.calibration_file:
            self.calibration = load_calibration(self.config.calibration_file)
            size = (self.calibration.width, self.calibration.height)
            if self.config.width and size != (self.config.width, self.config.height):
                raise CalibrationError(
                    f"calibration {self.config.calibration_file} is for {size[0]}x{size[1]}, "
                    f"the camera outputs {self.config.width}x{self.config.height}"
                )
            if not self.config.width:  # source size: fit frames to the calibrated size
                self.config = replace(self.config, width=size[0], height=size[1])
        if not float(p["diagnostics_period_s"]) > 0.0:
            raise ValueError(f"diagnostics_period_s must be > 0, got {p['diagnostics_period_s']}")
        if p["reliability"] not in ("best_effort", "reliable") or int(p["qos_depth"]) < 1:
            raise ValueError(
                f"reliability must be best_effort|reliable and qos_depth >= 1, got {p['reliability']}, {p['qos_depth']}"
            )
        qos = QoSProfile(
            history=qos_profile_sensor_data.history,
            depth=int(p["qos_depth"]),
            reliability=ReliabilityPolicy.BEST_EFFORT
            if p["reliability"] == "best_effort"
            else ReliabilityPolicy.RELIABLE,
            durability=qos_profile_sensor_data.durability,
        )
        image_topic, info_topic = camera_topics(self.config.name)
        self.image_pub = self.create_publisher(Image, image_topic, qos)
        self.info_pub = self.create_publisher(CameraInfo, info_topic, qos)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.worker = CameraWorker(self.config, self._publish_frame, log=self._log_throttled)
        self.create_timer(float(p["diagnostics_period_s"]), self._publish_diagnostics)
        self.worker.start()
        self.get_logger().info(
            f"camera {self.config.name}: {self.config.kind.value} {self.config.source} -> "
            f"{self.image_pub.topic_name} ({self.config.encoding}, {p['reliability']})"
        )

    def _log_throttled(self, level: Level, message: str) -> None:
        logger = self.get_logger()
        if level is Level.OK:
            logger.info(message)
        elif level is Level.WARN:
            logger.warning(message, throttle_duration_sec=2.0)
        else:
            logger.error(message, throttle_duration_sec=2.0)

    def _publish_frame(self, frame_rgb: np.ndarray, _index: int) -> None:
        stamp = self.get_clock().now().to_msg()
        msg = numpy_to_image(
            _encode(frame_rgb, self.config.encoding), self.config.encoding, stamp, self.config.optical_frame
        )
        if self.calibration is not None:
            info = self.calibration.to_camera_info(stamp, self.config.optical_frame)
        else:
            info = uncalibrated_camera_info(msg.width, msg.height, stamp, self.config.optical_frame)
        self.image_pub.publish(msg)
        self.info_pub.publish(info)

    def _publish_diagnostics(self) -> None:
        status = self.worker.status()
        level, message = status.level()
        values = {
            "state": status.state.value,
            "source": status.source,
            "fps": f"{status.fps:.2f}",
            "target_fps": f"{status.target_fps:g}",
            "frames": str(status.frames),
            "drops": str(status.drops),
            "skipped": str(status.skipped),
            "reconnects": str(status.reconnects),
            "last_error": status.last_error,
            "topic": self.image_pub.topic_name,
            "calibrated": str(self.calibration is not None).lower(),
        }
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status.append(
            DiagnosticStatus(
                level=bytes([level.value]),
                name=f"{self.get_name()}: camera {self.config.name}",
                message=message,
                hardware_id=status.source,
                values=[KeyValue(key=k, value=v) for k, v in values.items()],
            )
        )
        self.diag_pub.publish(array)

    def destroy_node(self) -> None:
        if not self.worker.stop():
            self.get_logger().error("camera thread did not stop within 5 s")
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    # CameraConfig and CalibrationError raise ValueError: a configuration problem, refused with exit code 2
    return run_node(CameraNode, "camera_node", args)


if __name__ == "__main__":
    sys.exit(main())
