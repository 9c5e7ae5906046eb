"""A LeRobot policy that answers NaN or the wrong number of values, served as vla-serve serves one (the
LeRobot backend's own mapping and checks around a stand-in for LeRobot's model, so no LeRobot venv is needed),
behind the simulator, the policy node (backend:=remote) and the safety monitor as processes over real topics:
no command leaves the node, the monitor holds, and the node says why. A server that skips the check (an older
vla-serve, a foreign one) is refused by the node itself."""

import math

import numpy as np
import pytest
from vla_common.robots import PANDA_COMMAND_JOINTS
from vla_policy.backends.lerobot_io import Feature, LeRobotPolicy, plan_io
from vla_policy.backends.wire import Message, MessageType
from vla_policy.serve import PolicyServer

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")
from sim_stack import SimStack, sim_manifest  # noqa: E402

TOKEN = "lerobot-bad-output"
CAMERAS = ("front", "wrist")


def act_io():
    inputs = [Feature(f"observation.images.{c}", "VISUAL", (3, 96, 96)) for c in CAMERAS]
    inputs.append(Feature("observation.state", "STATE", (8,)))
    return plan_io(sim_manifest(CAMERAS), inputs, [Feature("action", "ACTION", (8,))])


class UncheckedServer(PolicyServer):
    """A server that passes the model's NaN straight on (no chunk check on its side)."""

    def _answer(self, data):
        answer = super()._answer(data)
        if answer.type is not MessageType.CHUNK:
            return answer
        actions = np.full_like(answer.arrays["actions"], math.nan)
        return Message(MessageType.CHUNK, answer.id, answer.fields, {"actions": actions})


def holding_state(batch):
    return np.tile(batch["observation.state"].astype(np.float64), (1, 10, 1))


CASES = {
    # what the stand-in for LeRobot's model answers, the server class, what the node's log must say
    "nan": (lambda b: np.full((1, 10, 8), math.nan), PolicyServer, "answered NaN or inf"),
    "wrong_size": (lambda b: np.zeros((1, 10, 7)), PolicyServer, "actions of size 7, the manifest has 8"),
    "unchecked_nan": (holding_state, UncheckedServer, "action chunk holds NaN or inf"),
}


def serve_in_the_sim(tmp_path, model, server_class=PolicyServer, settle_s=2.0):
    """Serve ``model`` (a stand-in for LeRobot's preprocessor + model + postprocessor) through the LeRobot
    backend's mapping; run the sim stack until the node has asked it a few times; return the stopped stack."""
    calls = []

    def run(batch):
        calls.append(batch["task"])
        return model(batch)

    io = act_io()
    policy = LeRobotPolicy(io, run, lambda: None)
    with server_class(policy, io.manifest, TOKEN, host="127.0.0.1", port=0) as server:
        stack = SimStack(tmp_path, f"ws://127.0.0.1:{server.port}", TOKEN, cameras=CAMERAS)
        try:
            # The node is up, instructed by the sim and asking the policy; the monitor is armed and reporting.
            assert stack.spin(60.0, until=lambda: len(calls) >= 3 and stack.safety.get("armed") == "True"), (
                stack.output()
            )
            stack.spin(settle_s)
            # Discovery of the observer's best-effort subscription can lag on a busy machine: wait for it.
            stack.spin(20.0, until=lambda: stack.heartbeats > 10)
            assert stack.heartbeats > 10, "the node is alive and says so"
            assert calls[-1], "the sim's instruction reached the policy as its task"
        finally:
            stack.close()
    return stack


def test_a_sound_policy_is_commanded_through_the_same_stack(tmp_path):
    """The control: the same stack and server with finite actions of the right size do command the arm."""
    stack = serve_in_the_sim(tmp_path, holding_state)
    assert len(stack.policy_commands) > 10, stack.output()
    assert stack.accepted() > 10, stack.safety
    assert tuple(stack.policy_commands[-1].name) == tuple(PANDA_COMMAND_JOINTS)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_lerobot_output_is_refused_and_the_monitor_holds(tmp_path, case):
    model, server_class, named = CASES[case]
    stack = serve_in_the_sim(tmp_path, model, server_class)
    assert stack.policy_commands == [], f"a command left the node for a {case} policy"
    assert stack.accepted() == 0
    assert stack.safety.get("status") == "HOLD", stack.safety
    log = stack.log("policy_node")
    assert named in log, log[-3000:]
    assert "holding" in log
