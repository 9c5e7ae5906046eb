"""policy_node as its own process over real topics, with the remote backend served by vla-serve's PolicyServer.

The policy behind the server is deterministic (state + an offset that depends on the task), so each command
can be checked against what the node must have computed.
"""

import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest
from vla_common.policy import ActionChunk
from vla_policy.serve import PolicyServer
from vla_safety.limits import load_profile, position_bounds

rclpy = pytest.importorskip("rclpy")
from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from vla_perception.codec import numpy_to_image  # noqa: E402

ARM = tuple(f"panda_joint{i}" for i in range(1, 8))
COMMANDED = (*ARM, "panda_finger_joint1")
ROBOT_JOINTS = ("panda_finger_joint2", *reversed(COMMANDED))  # a driver's own order, both fingers
STATE = {name: 0.1 * i for i, name in enumerate(ROBOT_JOINTS)}
TOKEN = "node-test-token"
OFFSETS = {"pick up the cube": 0.05, "push the cube left": -0.03}


def manifest(cameras=("front",), joints=COMMANDED):
    return EmbodimentManifest(
        robot_type="panda",
        joint_names=joints,
        action_names=joints,
        action_type=ActionType.ABSOLUTE_JOINT_POSITION,
        fps=10.0,
        cameras=tuple(CameraSpec(c, 48, 64) for c in cameras),
        joint_units=tuple("m" if "finger" in j else "rad" for j in joints),
    )


class OffsetPolicy:
    """actions[k] = state + offset(task), 10 steps at 10 Hz, after a model-like 60 ms."""

    def __init__(self):
        self.calls = 0
        self.resets = 0

    def reset(self):
        self.resets += 1

    def infer(self, observation):
        self.calls += 1
        image = observation["observation.images.front"]
        if image.shape != (48, 64, 3) or image.dtype != np.uint8:
            raise ValueError(f"unexpected image {image.shape} {image.dtype}")
        time.sleep(0.06)
        target = np.asarray(observation["observation.state"], float) + OFFSETS[observation["task"]]
        return ActionChunk(np.tile(target, (10, 1)), COMMANDED, observation["timestamp"], 0.1)


def expected_command(task):
    """The fake policy's target, clipped into the panda profile's position limits as the node clips it."""
    low, high = position_bounds(load_profile("panda"), COMMANDED)
    return np.clip(np.array([STATE[j] for j in COMMANDED]) + OFFSETS[task], low, high)


class Harness:
    """The robot side: camera, joint states, instruction; records commands, heartbeats, diagnostics."""

    def __init__(self, sim_time_origin=None):
        self.sim_time_origin = sim_time_origin  # publish /clock from this many seconds, stamps in sim time
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("policy_node_test", context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        n = self.node
        self.image_pub = n.create_publisher(
            type(numpy_to_image(np.zeros((2, 2, 3), np.uint8))), "/camera/image_raw", qos_profile_sensor_data
        )
        self.state_pub = n.create_publisher(JointState, "/joint_states", 10)
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.instruction_pub = n.create_publisher(String, "/task_instruction", latched)
        self.commands, self.heartbeats, self.diagnostics = [], [], []
        n.create_subscription(
            JointState, "/policy/joint_commands", lambda m: self.commands.append((time.monotonic(), m)), 50
        )
        n.create_subscription(
            Header, "/policy/heartbeat", lambda m: self.heartbeats.append(time.monotonic()), 50
        )
        n.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.enable = n.create_client(SetBool, "/policy_node/enable")
        self.camera_on = True
        self.camera_lag_s = 0.0  # frames stamped this long before they are published
        self.state_nan = False
        self.joint_names = ROBOT_JOINTS
        self.image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        if sim_time_origin is not None:
            self._sim_start = time.monotonic()
            self.clock_on = True
            self.clock_pub = n.create_publisher(Clock, "/clock", 10)
            n.create_timer(0.005, self._publish_clock)
        n.create_timer(0.05, self._publish_camera)
        n.create_timer(0.02, self._publish_state)

    def stamp(self, lag_s=0.0):
        if self.sim_time_origin is None:
            now = self.node.get_clock().now().nanoseconds / 1e9 - lag_s
        else:
            now = self.sim_time_origin + time.monotonic() - self._sim_start - lag_s
        return Time(sec=int(now), nanosec=int((now % 1) * 1e9))

    def _publish_clock(self):
        if self.clock_on:
            self.clock_pub.publish(Clock(clock=self.stamp()))

    def _publish_camera(self):
        if self.camera_on:
            self.image_pub.publish(numpy_to_image(self.image, "rgb8", stamp=self.stamp(self.camera_lag_s)))

    def _publish_state(self):
        msg = JointState()
        msg.header.stamp = self.stamp()
        msg.name = list(self.joint_names)
        msg.position = [math.nan if self.state_nan else STATE.get(j, 0.0) for j in self.joint_names]
        self.state_pub.publish(msg)

    def spin(self, seconds, until=None):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)
            if until is not None and until():
                return True
        return until is None

    def instruct(self, text):
        self.instruction_pub.publish(String(data=text))

    def set_enabled(self, value):
        if not self.enable.wait_for_service(timeout_sec=5.0):
            raise TimeoutError("~/enable service not found")
        future = self.enable.call_async(SetBool.Request(data=value))
        self.spin(5.0, until=future.done)
        return future.result()

    def commands_since(self, t):
        return [m for (stamp, m) in self.commands if stamp >= t]

    def close(self):
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def start_node(port, *params, env_extra=None):
    env = {**os.environ, "VLA_REMOTE_TOKEN": TOKEN, **(env_extra or {})}
    args = [
        sys.executable, "-m", "vla_policy.policy_node", "--ros-args",
        "-p", "backend:=remote", "-p", f"remote_uri:=ws://127.0.0.1:{port}", "-p", "remote_timeout_s:=2.0",
        "-p", "control_rate_hz:=50.0", "-p", "max_image_age_s:=0.3",
        *[x for p in params for x in ("-p", p)],
    ]  # fmt: skip
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def stop_node(proc):
    if proc.poll() is None:
        proc.send_signal(subprocess.signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.stdout.read() if proc.stdout else ""


@pytest.fixture
def harness():
    h = Harness()
    yield h
    h.close()


def test_node_commands_holds_and_follows_instructions(harness):
    policy = OffsetPolicy()
    with PolicyServer(policy, manifest(), TOKEN, host="127.0.0.1", port=0) as server:
        proc = start_node(server.port)
        try:
            # Alive but idle: heartbeats (>= 10 Hz) and no command without an instruction.
            assert harness.spin(20.0, until=lambda: len(harness.heartbeats) >= 5), stop_node(proc)
            t0 = time.monotonic()
            harness.spin(1.0)
            beats = [b for b in harness.heartbeats if b >= t0]
            assert len(beats) >= 10, f"{len(beats)} heartbeats in 1 s"
            assert harness.commands == []

            # An instruction: commands at the control rate, the 8 joints in order, the policy's targets.
            harness.instruct("pick up the cube")
            assert harness.spin(10.0, until=lambda: len(harness.commands) >= 5), stop_node(proc)
            t1 = time.monotonic()
            harness.spin(1.0)
            window = harness.commands_since(t1)
            assert 40 <= len(window) <= 56, f"{len(window)} commands in 1 s at 50 Hz"
            last = window[-1]
            assert tuple(last.name) == COMMANDED
            np.testing.assert_allclose(last.position, expected_command("pick up the cube"), atol=1e-6)

            # A new instruction clears the queue: the new task's targets take over (crossfade: within ~0.3 s).
            harness.instruct("push the cube left")
            harness.spin(1.0)
            np.testing.assert_allclose(
                harness.commands[-1][1].position, expected_command("push the cube left"), atol=1e-6
            )
            assert policy.resets >= 2

            # Disabled: no command; enabled again: commands resume.
            assert harness.set_enabled(False).success
            t2 = time.monotonic()
            harness.spin(0.5)
            assert harness.commands_since(t2 + 0.1) == []
            assert harness.set_enabled(True).success
            assert harness.spin(5.0, until=lambda: len(harness.commands_since(time.monotonic() - 0.2)) >= 3)

            # The camera stops: commands stop within max_image_age_s (0.3 s), heartbeats go on.
            harness.camera_on = False
            t3 = time.monotonic()
            harness.spin(1.0)
            late = harness.commands_since(t3 + 0.4)
            assert late == [], f"{len(late)} commands on a stale camera"
            assert len([b for b in harness.heartbeats if b >= t3 + 0.4]) >= 5
            harness.camera_on = True
            assert harness.spin(5.0, until=lambda: len(harness.commands_since(time.monotonic() - 0.2)) >= 3)

            # NaN joint states are refused, so the state goes stale: commands stop within max_state_age_s.
            harness.state_nan = True
            t5 = time.monotonic()
            harness.spin(1.0)
            assert harness.commands_since(t5 + 0.35) == []
            harness.state_nan = False
            assert harness.spin(5.0, until=lambda: len(harness.commands_since(time.monotonic() - 0.2)) >= 3)

            # The empty instruction means idle.
            harness.instruct("")
            t4 = time.monotonic()
            harness.spin(0.6)
            assert harness.commands_since(t4 + 0.1) == []

            # Diagnostics report the figures the issue asks for.
            assert harness.spin(3.0, until=lambda: harness.diagnostics)
            values = {kv.key: kv.value for kv in harness.diagnostics[-1].status[0].values}
            for key in (
                "inference_latency_p50_ms",
                "queue_depth_s",
                "control_rate_achieved_hz",
                "obs_to_command_latency_p99_ms",
            ):
                assert key in values
            assert float(values["inference_latency_p50_ms"]) >= 60.0
            assert abs(float(values["control_rate_achieved_hz"]) - 50.0) < 5.0
            assert proc.poll() is None
        finally:
            output = stop_node(proc)
        assert proc.returncode == 0, output


class StampRecordingPolicy(OffsetPolicy):
    def __init__(self):
        super().__init__()
        self.seen = []  # (task, observation timestamp) per inference

    def infer(self, observation):
        self.seen.append((observation["task"], float(observation["timestamp"])))
        return super().infer(observation)


def test_a_new_instruction_or_a_resume_is_acted_on_only_with_inputs_seen_after_it(harness):
    # A reset comes with a new instruction, or (vla-demo) within a pause that keeps the instruction: frames taken
    # before it show the old scene, and the policy's state belongs to the old episode. The camera stamps its
    # frames 0.2 s old (still within max_image_age_s 0.3), so the newest frame on arrival predates it.
    harness.camera_lag_s = 0.2
    policy = StampRecordingPolicy()
    with PolicyServer(policy, manifest(), TOKEN, host="127.0.0.1", port=0) as server:
        proc = start_node(server.port)
        try:
            harness.instruct("pick up the cube")
            assert harness.spin(20.0, until=lambda: len(harness.commands) >= 5), stop_node(proc)
            instructed = harness.node.get_clock().now().nanoseconds / 1e9
            harness.instruct("push the cube left")
            assert harness.spin(10.0, until=lambda: any(t == "push the cube left" for t, _ in policy.seen))
            first = next(stamp for task, stamp in policy.seen if task == "push the cube left")
            assert first >= instructed, (
                f"first chunk for the new task saw a frame {instructed - first:.3f} s older"
            )
            harness.spin(0.5)
            np.testing.assert_allclose(
                harness.commands[-1][1].position, expected_command("push the cube left"), atol=1e-6
            )

            assert harness.set_enabled(False).success
            harness.spin(0.3)
            resets, inferences = policy.resets, len(policy.seen)
            resumed = harness.node.get_clock().now().nanoseconds / 1e9
            assert harness.set_enabled(True).success
            assert harness.spin(10.0, until=lambda: len(policy.seen) > inferences), stop_node(proc)
            first = policy.seen[inferences][1]
            assert first >= resumed, f"first chunk after resuming saw a frame {resumed - first:.3f} s older"
            assert policy.resets == resets + 1
        finally:
            output = stop_node(proc)
        assert proc.returncode == 0, output


def test_joint_state_mismatch_is_refused(harness):
    harness.joint_names = tuple(j for j in ROBOT_JOINTS if j != "panda_joint4")
    with PolicyServer(OffsetPolicy(), manifest(), TOKEN, host="127.0.0.1", port=0) as server:
        proc = start_node(server.port)
        harness.instruct("pick up the cube")
        try:
            harness.spin(20.0, until=lambda: proc.poll() is not None)
        finally:
            output = stop_node(proc)
    assert proc.returncode == 2, output
    assert "panda_joint4" in output and "refusing" in output
    assert harness.commands == []


def test_camera_mismatch_is_refused_at_start():
    with PolicyServer(
        OffsetPolicy(), manifest(cameras=("front", "wrist")), TOKEN, host="127.0.0.1", port=0
    ) as server:
        proc = start_node(server.port)
        try:
            proc.wait(20)
        finally:
            output = stop_node(proc)
    assert proc.returncode == 2, output
    assert "wrist" in output


def test_unlimited_joint_is_refused_at_start():
    joints = (*COMMANDED, "shoulder_pan_joint")  # not in the panda safety profile
    with PolicyServer(OffsetPolicy(), manifest(joints=joints), TOKEN, host="127.0.0.1", port=0) as server:
        proc = start_node(server.port)
        try:
            proc.wait(20)
        finally:
            output = stop_node(proc)
    assert proc.returncode == 2, output
    assert "shoulder_pan_joint" in output and "limits" in output


def test_wrong_token_is_refused_at_start():
    with PolicyServer(OffsetPolicy(), manifest(), "another-token", host="127.0.0.1", port=0) as server:
        proc = start_node(server.port)
        try:
            proc.wait(20)
        finally:
            output = stop_node(proc)
    assert proc.returncode == 2, output
    assert "token" in output


@pytest.mark.parametrize("process", [True, False], ids=["inference_process", "inference_thread"])
def test_node_with_the_native_backend(harness, tmp_path, process):
    """A tiny checkpoint from vla-train behind the node: commands at 50 Hz, each within the model's own chunk."""
    from test_backend_native import train_tiny_checkpoint

    from vla_policy import load_policy

    checkpoint = train_tiny_checkpoint(tmp_path)
    policy = load_policy(checkpoint)
    state = np.array([STATE[j] for j in COMMANDED], np.float32)
    chunk = policy.infer(
        {
            "observation.images.front": harness.image,
            "observation.state": state,
            "task": "pick up the red cube",
        }
    )
    low, high = chunk.actions.min(axis=0), chunk.actions.max(axis=0)

    env = {k: v for k, v in os.environ.items() if k != "VLA_REMOTE_TOKEN"}
    args = [
        sys.executable, "-m", "vla_policy.policy_node", "--ros-args",
        "-p", "backend:=native", "-p", f"checkpoint:={checkpoint}", "-p", "control_rate_hz:=50.0",
        "-p", f"inference_process:={str(process).lower()}",
    ]  # fmt: skip
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        harness.instruct("pick up the red cube")
        assert harness.spin(60.0, until=lambda: len(harness.commands) >= 5 or proc.poll() is not None)
        assert proc.poll() is None, stop_node(proc)
        t0 = time.monotonic()
        harness.spin(1.0)
        window = harness.commands_since(t0)
        assert 40 <= len(window) <= 56, f"{len(window)} commands in 1 s at 50 Hz"
        for msg in window:
            assert tuple(msg.name) == COMMANDED
            position = np.array(msg.position)
            assert np.all(position >= low - 1e-5) and np.all(position <= high + 1e-5), (position, low, high)
    finally:
        output = stop_node(proc)
    assert proc.returncode == 0, output


def test_killed_node_leaves_no_inference_process(harness, tmp_path):
    psutil = pytest.importorskip("psutil")
    from test_backend_native import train_tiny_checkpoint

    checkpoint = train_tiny_checkpoint(tmp_path)
    args = [sys.executable, "-m", "vla_policy.policy_node", "--ros-args", "-p", f"checkpoint:={checkpoint}"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert harness.spin(60.0, until=lambda: len(harness.heartbeats) >= 3 or proc.poll() is not None)
        children = psutil.Process(proc.pid).children()
        assert len(children) == 1 and "vla_policy.serve" in " ".join(children[0].cmdline())
        proc.kill()  # no chance to clean up
        proc.wait(5)
        _gone, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, "the inference process outlived its node"
    finally:
        stop_node(proc)


def test_node_runs_on_sim_time():
    """use_sim_time: timers, freshness and stamps follow /clock (here 5000 s ahead of nothing in particular)."""
    harness = Harness(sim_time_origin=5000.0)
    try:
        with PolicyServer(OffsetPolicy(), manifest(), TOKEN, host="127.0.0.1", port=0) as server:
            proc = start_node(server.port, "use_sim_time:=true")
            try:
                harness.instruct("pick up the cube")
                assert harness.spin(20.0, until=lambda: len(harness.commands) >= 10), stop_node(proc)
                stamps = [
                    m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for _, m in harness.commands[-10:]
                ]
                sim_now = harness.stamp().sec
                assert all(sim_now - 5.0 < t <= sim_now + 1.0 for t in stamps), (stamps, sim_now)
                np.testing.assert_allclose(
                    harness.commands[-1][1].position, expected_command("pick up the cube"), atol=1e-6
                )
                # /clock stops: sim time stands still, so the control timer stops too; nothing is commanded,
                # but the heartbeat (wall clock) goes on: a paused simulation is not a dead policy.
                harness.clock_on = False
                harness.spin(0.3)
                count, beats = len(harness.commands), len(harness.heartbeats)
                harness.spin(1.0)
                assert len(harness.commands) - count <= 1
                assert len(harness.heartbeats) - beats >= 10
            finally:
                output = stop_node(proc)
            assert proc.returncode == 0, output
    finally:
        harness.close()


def test_node_reports_when_the_safety_monitor_drops_its_commands(harness):
    """/safety/state ESTOP while commanding: a warning in the log and a WARN diagnostics entry; OK clears it."""
    safety_pub = harness.node.create_publisher(
        DiagnosticStatus,
        "/safety/state",
        QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        ),
    )

    def safety_state(status, message):
        safety_pub.publish(DiagnosticStatus(message=message, values=[KeyValue(key="status", value=status)]))

    def latest_entry():
        if not harness.diagnostics:
            return None
        entry = harness.diagnostics[-1].status[0]
        return entry, {kv.key: kv.value for kv in entry.values}

    with PolicyServer(OffsetPolicy(), manifest(), TOKEN, host="127.0.0.1", port=0) as server:
        proc = start_node(server.port, "diagnostics_rate_hz:=10.0")
        try:
            harness.instruct("pick up the cube")
            assert harness.spin(20.0, until=lambda: len(harness.commands) >= 5), stop_node(proc)
            assert harness.spin(3.0, until=lambda: (e := latest_entry()) and e[0].message == "commanding")
            assert latest_entry()[1]["safety_state"].startswith("unknown")

            safety_state("ESTOP", "ESTOP: /safety/estop service")
            assert harness.spin(3.0, until=lambda: (e := latest_entry()) and e[1]["safety_state"] == "ESTOP")
            entry, _ = latest_entry()
            assert entry.level == DiagnosticStatus.WARN
            assert "safety monitor drops the commands: ESTOP: /safety/estop service" in entry.message

            safety_state("OK", "OK")
            assert harness.spin(3.0, until=lambda: (e := latest_entry()) and e[0].message == "commanding")
            assert latest_entry()[0].level == DiagnosticStatus.OK
        finally:
            output = stop_node(proc)
        assert proc.returncode == 0, output
        assert "the safety monitor drops this node's commands: ESTOP: /safety/estop service" in output
        assert "the safety monitor passes commands again (OK)" in output


@pytest.mark.parametrize("listed", [True, False], ids=["instructions_listed", "older_checkpoint"])
def test_node_reports_out_of_distribution_instructions(harness, tmp_path, listed):
    """Native backend: an instruction far from every training instruction is logged once and turns
    /diagnostics WARN, and is still commanded; a checkpoint without the list gets no check, said once."""
    import json

    from test_backend_native import train_tiny_checkpoint

    checkpoint = train_tiny_checkpoint(tmp_path)
    config_path = checkpoint / "config.json"
    config = json.loads(config_path.read_text())
    if listed:  # the synthetic dataset's two tasks; the tiny model embeds them as hashed bags of words
        config["info"]["instructions"] = ["push the blue block right", "push the red block left"]
        config["info"]["ood_distance_threshold"] = 0.5
    else:
        config["info"].pop("instructions", None)
    config_path.write_text(json.dumps(config))

    def latest_entry():
        if not harness.diagnostics:
            return None
        entry = harness.diagnostics[-1].status[0]
        return entry, {kv.key: kv.value for kv in entry.values}

    def diagnosed(instruction, key, value):
        entry = latest_entry()
        return entry is not None and entry[1]["instruction"] == instruction and entry[1][key] == value

    args = [
        sys.executable, "-m", "vla_policy.policy_node", "--ros-args",
        "-p", "backend:=native", "-p", f"checkpoint:={checkpoint}", "-p", "diagnostics_rate_hz:=10.0",
        "-p", f"inference_process:={str(listed).lower()}",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        harness.instruct("push the red block left")
        assert harness.spin(60.0, until=lambda: len(harness.commands) >= 5 or proc.poll() is not None)
        assert proc.poll() is None, stop_node(proc)
        if listed:
            ok = ("push the red block left", "instruction_ood", "false")
            assert harness.spin(20.0, until=lambda: diagnosed(*ok)), latest_entry()
            entry, values = latest_entry()
            assert entry.level == DiagnosticStatus.OK and entry.message == "commanding"
            assert float(values["instruction_distance"]) == pytest.approx(0.0, abs=1e-3)
            assert values["ood_threshold"] == "0.500"  # the checkpoint's
            assert values["model_instruction"] == "push the red block left"  # no instruction_nearest
        else:
            assert harness.spin(
                20.0, until=lambda: diagnosed("push the red block left", "instruction_ood", "unknown")
            )
            entry, values = latest_entry()
            assert entry.level == DiagnosticStatus.OK
            assert "no training instructions" in values["instruction_check"]

        harness.instruct("make me a coffee")
        if listed:
            # A new instruction clears the queue: the entry says "holding" until its first chunk lands.
            assert harness.spin(
                20.0,
                until=lambda: (
                    diagnosed("make me a coffee", "instruction_ood", "true")
                    and latest_entry()[0].message.startswith("commanding")
                ),
            ), latest_entry()
            entry, values = latest_entry()
            assert entry.level == DiagnosticStatus.WARN
            assert entry.message.startswith(
                "commanding, but the instruction is out of distribution (distance"
            )
            assert float(values["instruction_distance"]) > 0.5
            assert values["nearest_training_instruction"] in (
                "push the blue block right",
                "push the red block left",
            )
        t0 = time.monotonic()
        harness.spin(1.0)
        assert len(harness.commands_since(t0)) >= 40, "an out-of-distribution instruction is still commanded"
        if listed:  # back in distribution: OK again
            harness.instruct("push the blue block right")
            assert harness.spin(
                10.0, until=lambda: diagnosed("push the blue block right", "instruction_ood", "false")
            )
            assert latest_entry()[0].level == DiagnosticStatus.OK
    finally:
        output = stop_node(proc)
    assert proc.returncode == 0, output
    if listed:
        assert "out-of-distribution instruction check: 2 training instructions" in output
        assert "(checkpoint)" in output
        assert output.count("'make me a coffee' is out of distribution") == 1, output
        assert "'push the red block left' is in distribution" in output
    else:
        assert output.count("no out-of-distribution instruction check") == 1, output
        assert "out of distribution:" not in output
