"""Calibration YAML (camera_calibration_parsers format) -> CameraInfo."""

from pathlib import Path

import pytest
import yaml
from builtin_interfaces.msg import Time
from vla_perception.calibration import (
    CalibrationError,
    load_calibration,
    parse_calibration,
    save_calibration,
    uncalibrated_camera_info,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "calibration_example.yaml"

# As written by ROS camera_calibration (cameracalibrator) for a real 640x480 camera.
CAMERACALIBRATOR_OUTPUT = """\
image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [ 430.15433,    0.     ,  306.94357,
            0.     ,  430.53439,  227.22814,
            0.     ,    0.     ,    1.     ]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.337248, 0.096574, -0.000765, 0.000970, 0.000000]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1., 0., 0., 0., 1., 0., 0., 0., 1.]
projection_matrix:
  rows: 3
  cols: 4
  data: [ 345.38232,    0.     ,  311.88099,    0.     ,
            0.     ,  402.18655,  221.89093,    0.     ,
            0.     ,    0.     ,    1.     ,    0.     ]
"""


def test_parse_cameracalibrator_output(tmp_path):
    path = tmp_path / "cam.yaml"
    path.write_text(CAMERACALIBRATOR_OUTPUT)
    calibration = load_calibration(path)
    info = calibration.to_camera_info(Time(sec=4), "front_camera_optical_frame")
    assert (info.width, info.height, info.distortion_model) == (640, 480, "plumb_bob")
    assert info.k[0] == pytest.approx(430.15433) and info.k[5] == pytest.approx(227.22814)
    assert list(info.d) == pytest.approx([-0.337248, 0.096574, -0.000765, 0.000970, 0.0])
    assert info.p[2] == pytest.approx(311.88099) and info.r[4] == 1.0
    assert info.header.stamp.sec == 4 and info.header.frame_id == "front_camera_optical_frame"


def test_shipped_example_loads():
    calibration = load_calibration(EXAMPLE)
    assert (calibration.width, calibration.height) == (640, 480)


def test_save_load_round_trip(tmp_path):
    calibration = load_calibration(EXAMPLE)
    save_calibration(calibration, tmp_path / "copy.yaml")
    assert load_calibration(tmp_path / "copy.yaml") == calibration


def test_uncalibrated_info_is_zeros():
    info = uncalibrated_camera_info(320, 240, frame_id="f")
    assert (info.width, info.height) == (320, 240) and not any(info.k) and info.distortion_model == ""


def _doc(**changes):
    doc = yaml.safe_load(CAMERACALIBRATOR_OUTPUT)
    doc.update(changes)
    return doc


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("just text", "not a calibration mapping"),
        ({k: v for k, v in _doc().items() if k != "camera_matrix"}, "missing camera_matrix"),
        (_doc(camera_matrix={"rows": 3, "cols": 3, "data": [1, 2, 3]}), "3x3 but has 3 values"),
        (_doc(projection_matrix={"rows": 3, "cols": 3, "data": [0] * 9}), "must be 3x4"),
        (_doc(camera_matrix={"rows": 3, "cols": 3, "data": ["a"] * 9}), "must hold numbers"),
        (_doc(camera_matrix={"rows": 3, "cols": 3, "data": [0] * 9}), "focal lengths"),
        (_doc(image_width=0), "size must be positive"),
        (_doc(image_width="wide"), "must be integers"),
        (_doc(distortion_coefficients={"rows": 1, "cols": 5, "data": [float("nan")] * 5}), "finite"),
    ],
)
def test_bad_calibrations(doc, message):
    with pytest.raises(CalibrationError, match=message):
        parse_calibration(doc)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(CalibrationError, match="cannot read calibration file"):
        load_calibration(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("a: [unclosed")
    with pytest.raises(CalibrationError, match="not valid YAML"):
        load_calibration(tmp_path / "bad.yaml")
