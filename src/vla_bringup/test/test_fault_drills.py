"""Fault drills on the real sim stack: sim_node, safety_node and policy_node (a tiny trained checkpoint) as
separate processes talking over real topics, and a fault injected while the arm is in motion.

1. The camera stops (sim_node's camera_rate set to 0 through its parameter service): the policy stops
   commanding (its diagnostics say the frames are stale), the safety monitor holds, the arm stops short of
   where the policy was taking it; frames back, the policy commands again.
2. An e-stop mid-motion: the arm holds, the latch survives the policy's commands and a False on the e-stop
   topic, and /safety/reset re-arms without a jump (the first command after it starts at the measured pose).
3. The policy process is SIGKILLed: the monitor holds and reports the lost heartbeat, the arm stops, the
   simulator and the monitor keep running, and the policy's inference child does not outlive it.

The processes are the ones ``vla-up sim commander:=policy model:=<dir>`` starts, with the plan's exact command
lines (:func:`vla_bringup.runner.resolve`), but started here one by one so that drill 3 can kill the policy and
restart it (under vla-up the policy is optional too: its death leaves the monitor holding, see test_plan).

Two test conditions, both documented: the safety monitor runs at ``velocity_scale`` 0.05 (a reduced-speed
mode: the policy's 0.35 rad move of joint 1 takes seconds, so a fault reliably lands mid-motion on a loaded
machine), and the checkpoint is trained on demonstrations that start at the simulator's home pose. A policy
whose first target is far from the pose (the generic synthetic dataset's, 2 rad off in joint 4) is refused by
the monitor's start-pose check and never moves the arm. Before each drill the arm is brought back home:
policy disabled, monitor re-armed (it then sends nothing until the next command), simulator reset, policy
enabled; the monitor then accepts the first target (within its start-pose tolerance) and the arm moves.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from vla_common.robots import PANDA_COMMAND_JOINTS
from vla_sim.robot import COMMAND_MAX_VELOCITY, HOME_POSITIONS

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
psutil = pytest.importorskip("psutil")

JOINTS = PANDA_COMMAND_JOINTS  # what the policy commands, in the checkpoint's order
HOME = HOME_POSITIONS  # where the simulator resets the arm
REACH = 0.35  # rad of joint 1 the policy was taught to move from home: inside the start-pose tolerance
TARGET = HOME + np.array([REACH, 0, 0, 0, 0, 0, 0, 0])
VELOCITY_SCALE = 0.05  # joint 1 at most 2.175 * 0.05 = 0.109 rad/s: the reach takes over 3 s
MAX_STEP_DT = 0.1  # safety_node.yaml: after a gap a command moves at most max_velocity * max_step_dt
STEP_CAP = COMMAND_MAX_VELOCITY * VELOCITY_SCALE * MAX_STEP_DT  # per joint: the most one command may move
STILL_WINDOW_S = 1.0
STILL_TOL = 2e-3  # rad: measured joints that moved less than this over the window are at rest
CLEAN = (0, -signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM)


def train_reach_checkpoint(root: Path) -> Path:
    """The tiny recipe of vla_policy's tests (one epoch, a few seconds) on demonstrations that start at the
    simulator's home pose and command joint 1 to home + REACH: a real checkpoint whose first target the safety
    monitor accepts. (The model is too small and too briefly trained to follow the state: it reaches TARGET.)"""
    from vla_collector.lerobot import DatasetSpec, LeRobotV3Writer, VideoCodecConfig
    from vla_common.manifest import CameraSpec
    from vla_policy.train import TINY_MODEL, TrainConfig, train

    spec = DatasetSpec(
        fps=10,
        robot_type="panda",
        state_names=JOINTS,
        action_names=JOINTS,
        cameras=(CameraSpec("front", 48, 64),),
        video=VideoCodecConfig(codec="libx264", pix_fmt="yuv444p", crf=0),
    )
    writer = LeRobotV3Writer.create(root / "dataset", spec)
    frames = 8
    for episode in range(2):
        states = np.repeat(HOME[None], frames, axis=0)
        states[:, 0] += np.linspace(0.0, REACH, frames)  # the arm on its way to the target
        actions = np.repeat(TARGET[None], frames, axis=0)  # the commanded target
        images = [np.full((48, 64, 3), 60 + 40 * episode, np.uint8)] * frames
        writer.write_episode(
            states.astype(np.float32), actions.astype(np.float32), {"front": images}, "pick up the red block"
        )
    result = train(
        TrainConfig(
            datasets=(str(root / "dataset"),),
            output=str(root / "run"),
            epochs=1,
            batch_size=8,
            warmup_steps=1,
            val_fraction=0.5,
            augmented_copies=0,
            seed=0,
            device="cpu",
            progress=False,
            model_overrides=dict(TINY_MODEL, horizon=8),
        )
    )
    return result.best


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, why: Callable[[], str] = str
) -> float:
    """Poll until ``predicate()`` is truthy; the seconds it took, or AssertionError naming ``what``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}. {why()}")


class Observer:
    """A test node recording the stack's traffic (spun in a background thread) and calling its services."""

    def __init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool

        self.node = rclpy.create_node("fault_drill_observer")
        self.lock = threading.Lock()
        self.states: list[tuple[float, np.ndarray]] = []  # (monotonic, measured positions of JOINTS)
        self.commands: list[tuple[float, np.ndarray]] = []  # /joint_commands: the safety monitor's output
        self.policy: list[tuple[float, np.ndarray]] = []  # /policy/joint_commands
        self.safety: list[tuple[float, dict[str, str]]] = []  # /safety/state: status, causes, counters
        self.policy_diag: list[tuple[float, dict[str, str]]] = []  # policy_node's /diagnostics values
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        n = self.node
        n.create_subscription(JointState, "/joint_states", self._keep(self.states), qos_profile_sensor_data)
        n.create_subscription(JointState, "/joint_commands", self._keep(self.commands), reliable)
        n.create_subscription(JointState, "/policy/joint_commands", self._keep(self.policy), reliable)
        n.create_subscription(DiagnosticStatus, "/safety/state", self._on_safety, latched)
        n.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.estop_topic = n.create_publisher(Bool, "/safety/estop", 10)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _keep(self, store: list) -> Callable:
        def callback(msg) -> None:
            lookup = dict(zip(msg.name, msg.position, strict=False))
            if all(j in lookup for j in JOINTS):
                with self.lock:
                    store.append((time.monotonic(), np.array([lookup[j] for j in JOINTS])))

        return callback

    def _on_safety(self, msg) -> None:
        values = {kv.key: kv.value for kv in msg.values}
        values["message"] = msg.message
        with self.lock:
            self.safety.append((time.monotonic(), values))

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("policy_node"):
                values = {kv.key: kv.value for kv in status.values}
                values["message"] = status.message
                with self.lock:
                    self.policy_diag.append((time.monotonic(), values))

    # --- reading what was seen ------------------------------------------------------------------------

    def since(self, store: list, t0: float) -> list:
        with self.lock:
            return [item for item in store if item[0] >= t0]

    def count(self, store: list) -> int:
        with self.lock:
            return len(store)

    def latest(self, store: list):
        with self.lock:
            return store[-1] if store else None

    def position(self) -> np.ndarray:
        latest = self.latest(self.states)
        if latest is None:
            raise AssertionError("no /joint_states seen")
        return latest[1]

    def safety_status(self) -> dict[str, str]:
        latest = self.latest(self.safety)
        return latest[1] if latest else {}

    def moving(self, window: float = 0.3, threshold: float = 0.004) -> bool:
        """Joint 1 moved more than ``threshold`` rad over the last ``window`` s (and is heading to TARGET)."""
        recent = self.since(self.states, time.monotonic() - window)
        if len(recent) < 5:
            return False
        return recent[-1][1][0] - recent[0][1][0] > threshold

    def still(self, window: float = STILL_WINDOW_S) -> bool:
        """The measured joints moved less than STILL_TOL over the last ``window`` s (enough samples)."""
        recent = self.since(self.states, time.monotonic() - window)
        if len(recent) < 10 or recent[0][0] - (time.monotonic() - window) > 0.2:
            return False
        positions = np.array([p for _, p in recent])
        return bool(np.all(positions.max(0) - positions.min(0) < STILL_TOL))

    def holding(self, window: float = STILL_WINDOW_S) -> bool:
        """/joint_commands kept coming over the last ``window`` s, every one the same pose: a hold."""
        recent = self.since(self.commands, time.monotonic() - window)
        if len(recent) < 10:  # the monitor repeats the hold at 50 Hz
            return False
        return all(np.array_equal(p, recent[-1][1]) for _, p in recent)

    # --- services ---------------------------------------------------------------------------------------

    def call(self, srv_type, name: str, request, timeout: float = 30.0):
        client = self.node.create_client(srv_type, name)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise AssertionError(f"service {name} not available")
            future = client.call_async(request)
            wait_for(future.done, timeout, f"an answer from {name}")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def trigger(self, name: str):
        from std_srvs.srv import Trigger

        return self.call(Trigger, name, Trigger.Request())

    def set_camera_rate(self, hz: float) -> None:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        value = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=hz)
        request = SetParameters.Request(parameters=[Parameter(name="camera_rate", value=value)])
        result = self.call(SetParameters, "/sim_node/set_parameters", request).results[0]
        assert result.successful, f"sim_node refused camera_rate:={hz}: {result.reason}"

    def enable_policy(self, on: bool) -> None:
        from std_srvs.srv import SetBool

        response = self.call(SetBool, "/policy_node/enable", SetBool.Request(data=on))
        assert response.success, response.message

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()


class Stack:
    """The sim plan's nodes as separate processes, each in its own session, output to a log file."""

    def __init__(self, checkpoint: Path, logs: Path) -> None:
        from vla_bringup.plan import build_plan
        from vla_bringup.runner import resolve

        self.logs = logs
        self.specs = {
            spec.name: spec
            for spec in resolve(build_plan("sim", {"commander": "policy", "model": str(checkpoint)}))
        }
        assert set(self.specs) == {"sim_node", "safety_node", "policy_node"}, list(self.specs)
        self.argv = {name: list(spec.argv) for name, spec in self.specs.items()}
        self.argv["safety_node"] += ["-p", f"velocity_scale:={VELOCITY_SCALE}"]  # a later -p wins
        self.procs: dict[str, subprocess.Popen] = {}
        for name in self.specs:
            self.start(name)

    def start(self, name: str) -> None:
        env = {**os.environ, **self.specs[name].env, "PYTHONUNBUFFERED": "1"}
        with open(self.logs / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                self.argv[name], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def log(self, name: str, tail: int = 2500) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def report(self) -> str:
        codes = {name: proc.poll() for name, proc in self.procs.items()}
        return f"exit codes {codes}\n" + "\n".join(f"--- {n} ---\n{self.log(n)}" for n in self.procs)

    def stop(self) -> dict[str, int]:
        """SIGINT to every process group still running, then SIGKILL after a grace period; the exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        return {name: proc.returncode for name, proc in self.procs.items()}


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        get_package_prefix("vla_bringup")
    except PackageNotFoundError:
        pytest.skip("needs the built workspace: source scripts/env.sh")
    root = tmp_path_factory.mktemp("fault_drills")
    checkpoint = train_reach_checkpoint(root)
    stack = Stack(checkpoint, root)
    rclpy.init()
    observer = Observer()
    try:
        wait_for(
            lambda: observer.count(observer.policy) > 10 or not all(map(stack.alive, stack.procs)),
            120,
            "policy_node to command",
            stack.report,
        )
        assert all(map(stack.alive, stack.procs)), "the stack did not start:\n" + stack.report()
        yield stack, observer
    finally:
        codes = stack.stop()
        observer.close()
        rclpy.try_shutdown()
    # After every drill, the simulator and the monitor stop cleanly on SIGINT (the policy may have been killed).
    assert codes["sim_node"] in CLEAN and codes["safety_node"] in CLEAN, stack.report()


def restart_policy_if_dead(stack: Stack, observer: Observer) -> None:
    if stack.alive("policy_node"):
        return
    before = observer.count(observer.policy)
    stack.start("policy_node")
    wait_for(lambda: observer.count(observer.policy) > before + 10, 120, "the restarted policy", stack.report)


def start_motion(stack: Stack, observer: Observer) -> None:
    """Bring the arm home and let the policy move it: on return joint 1 is moving towards TARGET.

    The policy is disabled, the monitor re-armed (holding nothing, it sends nothing), the simulator reset
    (the arm at home), the policy enabled: its first target is within the monitor's start-pose tolerance."""
    restart_policy_if_dead(stack, observer)
    observer.enable_policy(False)
    wait_for(
        lambda: not observer.since(observer.policy, time.monotonic() - 0.5), 10, "the disabled policy to stop"
    )
    response = observer.trigger("/safety/reset")  # re-armed with no command to hold: it sends nothing
    assert response.success, response.message
    response = observer.trigger("/sim_node/reset")  # the arm back at home
    assert response.success, response.message
    wait_for(
        lambda: np.allclose(observer.position(), HOME, atol=0.01) and observer.still(0.5),
        20,
        "the arm at rest at home",
        lambda: f"at {observer.position()}",
    )
    observer.enable_policy(True)
    wait_for(
        lambda: observer.moving() and observer.position()[0] > HOME[0] + 0.01,
        60,
        "the policy moving joint 1",
        lambda: (
            f"at {observer.position()}, safety {observer.safety_status().get('message')}\n{stack.report()}"
        ),
    )
    assert observer.safety_status().get("status") in ("OK", "CLAMPED"), observer.safety_status()


def assert_stopped_short(observer: Observer, at_fault: np.ndarray, what: str) -> np.ndarray:
    """/joint_commands come to a hold and the arm (measured) to rest, short of the policy's target: without the
    hold it would have gone on to it."""
    wait_for(
        lambda: observer.holding() and observer.still(),
        15,
        "/joint_commands at a hold and the arm at rest",
        lambda: f"at {observer.position()}",
    )
    rest = observer.position()
    print(
        f"{what}: joint 1 at {at_fault[0]:.4f} rad at the fault, rests at {rest[0]:.4f} (target {TARGET[0]})"
    )
    assert TARGET[0] - rest[0] > 0.05, (
        f"{what}: joint 1 rests at {rest[0]:.3f}, at the policy's target anyway"
    )
    assert np.abs(rest[1:] - HOME[1:]).max() < 0.02, f"{what}: other joints moved: {rest}"
    return rest


def test_camera_stops_policy_stops_and_robot_holds(drill):
    stack, observer = drill
    start_motion(stack, observer)
    at_fault = observer.position()
    observer.set_camera_rate(0.0)
    stopped = time.monotonic()
    camera_off = True
    try:
        # The policy sees its frames go stale and stops commanding; it says so on /diagnostics.
        wait_for(
            lambda: (
                (d := observer.latest(observer.policy_diag))
                and d[0] > stopped
                and d[1]["hold_reason"] == "STALE_IMAGE"
            ),
            15,
            "policy_node's diagnostics to report stale camera frames",
            lambda: f"last: {observer.latest(observer.policy_diag)}",
        )
        wait_for(
            lambda: not observer.since(observer.policy, time.monotonic() - 1.0),
            15,
            "1 s without /policy/joint_commands",
        )
        # The monitor times the commands out and holds; the arm comes to rest and stays there.
        wait_for(
            lambda: (
                observer.safety_status().get("status") == "HOLD"
                and "command_timeout" in observer.safety_status().get("causes", "")
            ),
            10,
            "/safety/state HOLD (command_timeout)",
            lambda: f"last: {observer.safety_status()}",
        )
        rest = assert_stopped_short(observer, at_fault, "camera stopped")
        held = observer.latest(observer.commands)[1]
        commands_at_rest = observer.count(observer.policy)
        wait_for(lambda: observer.still(2.0), 10, "the arm still at rest 2 s on")
        assert observer.holding(2.0), "/joint_commands left the hold"
        assert observer.count(observer.policy) == commands_at_rest, "the policy commanded without a camera"
        assert np.abs(held - rest).max() < 0.02, f"hold command {held} is not where the arm rests {rest}"
        assert np.allclose(observer.position(), rest, atol=STILL_TOL)
        observer.set_camera_rate(15.0)  # the plan's rate (sim_node's default)
        camera_off = False
    finally:
        if camera_off:  # a failed drill must not leave the next one blind
            with contextlib.suppress(AssertionError):
                observer.set_camera_rate(15.0)
    # Frames back: the policy commands again and the monitor lets the arm go on.
    back = time.monotonic()
    wait_for(
        lambda: len(observer.since(observer.policy, back)) > 10 and observer.moving(),
        30,
        "the policy commanding and the arm moving again after the camera came back",
        lambda: f"safety {observer.safety_status().get('message')}",
    )
    assert all(map(stack.alive, stack.procs)), stack.report()


def test_estop_during_motion_latches_and_reset_rearms_without_a_jump(drill):
    from std_msgs.msg import Bool

    stack, observer = drill
    start_motion(stack, observer)
    at_fault = observer.position()
    response = observer.trigger("/safety/estop")
    assert response.success, response.message
    engaged = time.monotonic()
    wait_for(
        lambda: observer.safety_status().get("status") == "ESTOP",
        10,
        "/safety/state ESTOP",
        lambda: f"last: {observer.safety_status()}",
    )
    assert_stopped_short(observer, at_fault, "e-stop")
    held = observer.latest(observer.commands)[1]

    # The latch survives: the policy keeps commanding, an e-stop False on the topic is ignored.
    observer.estop_topic.publish(Bool(data=False))
    policy_before = observer.count(observer.policy)
    dropped_before = int(observer.safety_status().get("dropped_estop", "0"))
    wait_for(lambda: observer.count(observer.policy) > policy_before + 50, 20, "50 more policy commands")
    wait_for(
        lambda: int(observer.safety_status().get("dropped_estop", "0")) > dropped_before,
        10,
        "/safety/state counting the dropped commands",
    )
    assert observer.still(2.0) and observer.holding(2.0), f"moved while e-stopped: {observer.position()}"
    assert all(np.array_equal(p, held) for _, p in observer.since(observer.commands, engaged + 0.5))
    assert all(s["status"] == "ESTOP" for _, s in observer.since(observer.safety, engaged + 0.5))
    assert observer.safety_status().get("estop_latched") == "True"

    # Reset: re-armed where the arm stands; the first command starts there, not at the policy's target.
    at_reset = observer.position()
    reset_at = time.monotonic()
    response = observer.trigger("/safety/reset")
    assert response.success, response.message
    wait_for(
        lambda: any(not np.array_equal(p, held) for _, p in observer.since(observer.commands, reset_at)),
        30,
        "a command after the reset",
    )

    def commands_after_reset() -> list[np.ndarray]:  # from the first one that is not the e-stop's hold
        after = [p for _, p in observer.since(observer.commands, reset_at)]
        return after[next(i for i, p in enumerate(after) if not np.array_equal(p, held)) :]

    first, wanted = commands_after_reset()[0], observer.latest(observer.policy)[1]
    print(
        f"reset at joint 1 {at_reset[0]:.4f}: first command {first[0]:.4f}, the policy wants {wanted[0]:.4f}"
    )
    assert wanted[0] - at_reset[0] > 0.05, (
        "the policy's target is near the pose: the check below proves nothing"
    )
    assert np.all(np.abs(first - at_reset) <= STEP_CAP + 0.003), (
        f"a jump after reset: first command {first} vs the pose {at_reset} (step caps {STEP_CAP})"
    )
    wait_for(observer.moving, 30, "the arm moving again after the reset")
    after = commands_after_reset()
    steps = np.abs(np.diff(np.array(after), axis=0)).max(axis=0)
    assert np.all(steps <= STEP_CAP + 1e-6), f"command steps {steps} rad after the reset (caps {STEP_CAP})"
    assert observer.safety_status().get("estop_latched") == "False"
    assert all(map(stack.alive, stack.procs)), stack.report()


def test_policy_killed_safety_holds_and_nothing_else_dies(drill):
    stack, observer = drill
    start_motion(stack, observer)
    policy = psutil.Process(stack.procs["policy_node"].pid)
    inference = policy.children(recursive=True)  # the local model's vla-serve child
    states_before = observer.count(observer.states)
    at_fault = observer.position()
    os.kill(policy.pid, signal.SIGKILL)  # the policy_node process only
    killed = time.monotonic()
    assert stack.procs["policy_node"].wait(10) == -signal.SIGKILL

    wait_for(
        lambda: any(
            s["status"] == "HOLD" and "heartbeat_lost" in s["causes"]
            for _, s in observer.since(observer.safety, killed)
        ),
        10,
        "/safety/state HOLD (heartbeat_lost)",
        lambda: f"last: {observer.safety_status()}",
    )
    assert_stopped_short(observer, at_fault, "policy killed")
    assert not observer.since(observer.policy, killed + 0.5), "policy commands after the kill"
    wait_for(lambda: observer.still(2.0) and observer.holding(2.0), 10, "the arm still held 2 s on")

    # Nothing else died: the simulator and the monitor run on and publish; the inference child is gone.
    assert stack.alive("sim_node") and stack.alive("safety_node"), stack.report()
    assert observer.count(observer.states) > states_before + 100, "sim_node stopped publishing"
    _, alive = psutil.wait_procs(inference, timeout=15)
    assert not alive, f"the inference process outlived policy_node: {alive}"
    # (the fixture checks at the end that the simulator and the monitor still stop cleanly)
