"""safety_node main() through vla_common.node.run_node: a RuntimeError from rclpy while spinning is a clean stop
only once rclpy has shut down; a refused configuration exits 1."""

import pytest
import rclpy
import vla_safety.safety_node as safety_node
from rclpy.executors import SingleThreadedExecutor

pytestmark = pytest.mark.ros

BINDINGS_ERROR = "Unable to convert call argument '0' to Python object"


def test_runtime_error_while_spinning_after_a_sigint_shutdown_is_a_clean_stop(monkeypatch):
    def spin(executor):
        rclpy.shutdown()  # what rclpy's SIGINT handler does while the executor waits
        raise RuntimeError(BINDINGS_ERROR)

    monkeypatch.setattr(SingleThreadedExecutor, "spin", spin)
    assert safety_node.main(["safety_node"]) == 0
    assert not rclpy.ok()


def test_runtime_error_while_spinning_with_rclpy_still_up_propagates(monkeypatch):
    def spin(executor):
        raise RuntimeError("a real failure")

    monkeypatch.setattr(SingleThreadedExecutor, "spin", spin)
    with pytest.raises(RuntimeError, match="a real failure"):
        safety_node.main(["safety_node"])
    assert not rclpy.ok()  # and main still shut rclpy down


def test_bad_configuration_still_refuses_to_start(capfd):
    code = safety_node.main(["safety_node", "--ros-args", "-p", "joints:=[panda_joint1, wheel]"])
    assert code == 1
    assert "refusing to start" in capfd.readouterr().err
    assert not rclpy.ok()
