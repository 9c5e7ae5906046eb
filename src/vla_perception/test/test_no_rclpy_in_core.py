"""The pure cores never import rclpy (they are used by training code and tools without ROS running)."""

import subprocess
import sys

CORES = ("codec", "preprocess", "freshness", "camera", "sources", "pattern", "calibration", "frame_rate")


def test_cores_do_not_import_rclpy():
    code = (
        "import sys\n"
        + "".join(f"import vla_perception.{name}\n" for name in CORES)
        + "print(sorted(m for m in sys.modules if m == 'rclpy' or m.startswith('rclpy.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
