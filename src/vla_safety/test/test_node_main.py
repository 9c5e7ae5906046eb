"""safety_node main(): a RuntimeError from rclpy while spinning is a clean stop only once rclpy has shut down."""

import pytest
import rclpy
import vla_safety.safety_node as safety_node

pytestmark = pytest.mark.ros

BINDINGS_ERROR = "Unable to convert call argument '0' to Python object"


def test_runtime_error_while_spinning_after_a_sigint_shutdown_is_a_clean_stop(monkeypatch):
    def spin(node):
        rclpy.shutdown()  # what rclpy's SIGINT handler does while the executor waits
        raise RuntimeError(BINDINGS_ERROR)

    monkeypatch.setattr(safety_node.rclpy, "spin", spin)
    assert safety_node.main(["safety_node"]) == 0
    assert not rclpy.ok()


def test_runtime_error_while_spinning_with_rclpy_still_up_propagates(monkeypatch):
    def spin(node):
        raise RuntimeError("a real failure")

    monkeypatch.setattr(safety_node.rclpy, "spin", spin)
    with pytest.raises(RuntimeError, match="a real failure"):
        safety_node.main(["safety_node"])
    assert not rclpy.ok()  # and main still shut rclpy down


def test_bad_configuration_still_refuses_to_start(capsys):
    code = safety_node.main(["safety_node", "--ros-args", "-p", "joints:=[panda_joint1, wheel]"])
    assert code == 1
    assert "refusing to start" in capsys.readouterr().err
    assert not rclpy.ok()
