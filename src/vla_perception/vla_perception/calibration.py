"""Camera calibration in the camera_calibration_parsers YAML format (what `cameracalibrator` writes and
camera_info_manager reads) <-> sensor_msgs/CameraInfo. No rclpy.

    image_width: 640
    image_height: 480
    camera_name: front
    camera_matrix: {rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]}
    distortion_model: plumb_bob
    distortion_coefficients: {rows: 1, cols: 5, data: [k1, k2, t1, t2, k3]}
    rectification_matrix: {rows: 3, cols: 3, data: [...]}
    projection_matrix: {rows: 3, cols: 4, data: [...]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo

_MATRICES = {
    "camera_matrix": (3, 3),
    "rectification_matrix": (3, 3),
    "projection_matrix": (3, 4),
}


class CalibrationError(ValueError):
    """A calibration file that is missing, malformed or does not fit the camera."""


@dataclass(frozen=True)
class CameraCalibration:
    width: int
    height: int
    camera_name: str
    k: tuple[float, ...]  # 3x3 row-major
    d: tuple[float, ...]
    r: tuple[float, ...]  # 3x3
    p: tuple[float, ...]  # 3x4
    distortion_model: str

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise CalibrationError(f"calibration image size must be positive, got {self.width}x{self.height}")
        for name, size in (("k", 9), ("r", 9), ("p", 12)):
            if len(getattr(self, name)) != size:
                raise CalibrationError(f"{name} needs {size} values, got {len(getattr(self, name))}")
        if not all(math.isfinite(v) for v in (*self.k, *self.d, *self.r, *self.p)):
            raise CalibrationError("calibration values must be finite numbers")
        if self.k[0] <= 0 or self.k[4] <= 0:
            raise CalibrationError(f"focal lengths fx, fy must be positive, got {self.k[0]}, {self.k[4]}")

    def to_camera_info(self, stamp: Time | None = None, frame_id: str = "") -> CameraInfo:
        info = CameraInfo(width=self.width, height=self.height, distortion_model=self.distortion_model)
        info.k, info.r, info.p = list(self.k), list(self.r), list(self.p)
        info.d = list(self.d)
        if stamp is not None:
            info.header.stamp = stamp
        info.header.frame_id = frame_id
        return info

    def to_yaml_dict(self) -> dict[str, Any]:
        return {
            "image_width": self.width,
            "image_height": self.height,
            "camera_name": self.camera_name,
            "camera_matrix": {"rows": 3, "cols": 3, "data": list(self.k)},
            "distortion_model": self.distortion_model,
            "distortion_coefficients": {"rows": 1, "cols": len(self.d), "data": list(self.d)},
            "rectification_matrix": {"rows": 3, "cols": 3, "data": list(self.r)},
            "projection_matrix": {"rows": 3, "cols": 4, "data": list(self.p)},
        }


def uncalibrated_camera_info(
    width: int, height: int, stamp: Time | None = None, frame_id: str = ""
) -> CameraInfo:
    """What camera_info_manager publishes without a calibration: the size, all matrices zero."""
    info = CameraInfo(width=width, height=height)
    if stamp is not None:
        info.header.stamp = stamp
    info.header.frame_id = frame_id
    return info


def _matrix(doc: dict[str, Any], key: str, path: str) -> tuple[float, ...]:
    entry = doc.get(key)
    if not isinstance(entry, dict) or "data" not in entry:
        raise CalibrationError(f"{path}: {key} must be a mapping with rows, cols and data")
    try:
        data = tuple(float(v) for v in entry["data"])
        rows, cols = int(entry.get("rows", 0)), int(entry.get("cols", 0))
    except (TypeError, ValueError):
        raise CalibrationError(f"{path}: {key} must hold numbers") from None
    expected = _MATRICES.get(key)
    if expected is not None and (rows, cols) != expected:
        raise CalibrationError(f"{path}: {key} must be {expected[0]}x{expected[1]}, says {rows}x{cols}")
    if rows * cols != len(data):
        raise CalibrationError(f"{path}: {key} is {rows}x{cols} but has {len(data)} values")
    return data


def parse_calibration(doc: Any, path: str = "<calibration>") -> CameraCalibration:
    if not isinstance(doc, dict):
        raise CalibrationError(f"{path}: not a calibration mapping")
    missing = [
        k
        for k in (
            "image_width",
            "image_height",
            "camera_matrix",
            "distortion_coefficients",
            "projection_matrix",
        )
        if k not in doc
    ]
    if missing:
        raise CalibrationError(f"{path}: missing {', '.join(missing)}")
    rect = (
        _matrix(doc, "rectification_matrix", path)
        if "rectification_matrix" in doc
        else (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
    )
    try:
        width, height = int(doc["image_width"]), int(doc["image_height"])
    except (TypeError, ValueError):
        raise CalibrationError(f"{path}: image_width and image_height must be integers") from None
    return CameraCalibration(
        width=width,
        height=height,
        camera_name=str(doc.get("camera_name", "")),
        k=_matrix(doc, "camera_matrix", path),
        d=_matrix(doc, "distortion_coefficients", path),
        r=tuple(float(v) for v in rect),
        p=_matrix(doc, "projection_matrix", path),
        distortion_model=str(doc.get("distortion_model", "plumb_bob")),
    )


def load_calibration(path: str | Path) -> CameraCalibration:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise CalibrationError(f"cannot read calibration file {path}: {error.strerror}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise CalibrationError(f"{path}: not valid YAML: {error}") from None
    return parse_calibration(doc, str(path))


def save_calibration(calibration: CameraCalibration, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(calibration.to_yaml_dict(), sort_keys=False), encoding="utf-8")
