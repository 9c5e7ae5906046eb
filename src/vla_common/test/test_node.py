"""run_node(): exit codes, refusal, clean stops on shutdown and on SIGTERM, and the parameter helper."""

import signal
import subprocess
import sys

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.task import Future
from vla_common.node import EXIT_OK, EXIT_REFUSED, declare_parameters, run_node

pytestmark = pytest.mark.ros

BINDINGS_ERROR = "Unable to convert call argument '0' to Python object"


class Probe(Node):
    def __init__(self):
        super().__init__("probe")
        self.stop_reason = Future()
        self.stopped = False
        self.destroyed = False

    def stop(self):
        self.stopped = True

    def destroy_node(self):
        self.destroyed = True
        super().destroy_node()


def test_a_refused_configuration_exits_with_the_refusal_code(capfd):
    def refuse():
        raise ValueError("joint 'wheel' has no limits")

    assert run_node(refuse, "probe", ["probe"]) == EXIT_REFUSED
    assert run_node(refuse, "probe", ["probe"], refused_exit_code=1) == 1
    err = capfd.readouterr().err
    assert "refusing to start" in err and "wheel" in err
    assert not rclpy.ok()


def test_other_construction_errors_propagate():
    def broken():
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        run_node(broken, "probe", ["probe"])
    assert not rclpy.ok()


def test_a_runtime_error_after_a_sigint_shutdown_is_a_clean_stop(monkeypatch):
    nodes = []

    def make():
        nodes.append(Probe())
        return nodes[-1]

    def spin(self):
        rclpy.shutdown()  # what rclpy's SIGINT handler does while the executor waits
        raise RuntimeError(BINDINGS_ERROR)

    monkeypatch.setattr(SingleThreadedExecutor, "spin", spin)
    assert run_node(make, "probe", ["probe"]) == EXIT_OK
    assert nodes[0].destroyed
    assert not rclpy.ok()


def test_a_runtime_error_with_rclpy_still_up_propagates(monkeypatch):
    def spin(self):
        raise RuntimeError("a real failure")

    monkeypatch.setattr(SingleThreadedExecutor, "spin", spin)
    with pytest.raises(RuntimeError, match="a real failure"):
        run_node(Probe, "probe", ["probe"])
    assert not rclpy.ok()  # and run_node still shut rclpy down


def test_a_node_that_stops_itself_exits_refused_after_before_destroy(capfd):
    nodes = []

    def make():
        node = Probe()
        node.create_timer(
            0.01, lambda: node.stop_reason.done() or node.stop_reason.set_result("embodiment mismatch")
        )
        nodes.append(node)
        return node

    code = run_node(make, "probe", ["probe"], until=lambda n: n.stop_reason, before_destroy=Probe.stop)
    assert code == EXIT_REFUSED
    assert nodes[0].stopped and nodes[0].destroyed
    assert "embodiment mismatch" in capfd.readouterr().err


def test_sigterm_and_sigint_stop_a_node_cleanly():
    code = (
        "import sys\n"
        "from rclpy.node import Node\n"
        "from vla_common.node import run_node\n"
        "def make():\n"
        "    node = Node('probe')\n"
        "    node.create_timer(0.05, lambda: print('spinning', flush=True))\n"
        "    return node\n"
        "sys.exit(run_node(make, 'probe'))\n"
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "spinning"
            proc.send_signal(sig)
            assert proc.wait(timeout=20) == EXIT_OK, sig
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()


def test_declare_parameters_returns_the_values():
    rclpy.init()
    try:
        node = Node("params", parameter_overrides=[rclpy.parameter.Parameter("rate", value=15)])
        table = {"rate": (50.0, "Hz"), "name": ("front", "a camera")}
        values = declare_parameters(node, table, read_only=True, floats_take_ints=True)
        assert values == {"rate": 15, "name": "front"}
        descriptor = node.describe_parameter("rate")
        assert descriptor.read_only and descriptor.dynamic_typing and descriptor.description == "Hz"
        assert not node.describe_parameter("name").dynamic_typing
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
