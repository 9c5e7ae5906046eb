"""One way a policy drives the arm: chunks through the same :class:`ActionExecutor` that ``policy_node`` runs.

Closed-loop evaluation (``vla-eval --closed-loop``) and DAgger (``vla-dagger collect``) step a
:class:`ChunkDriver` once per control period of the simulator, so their numbers measure the code that drives
the robot: the same queue, the same blending of overlapping chunks, the same "infer again when the queue
reaches less than ``refill_below_s`` ahead" rule as the node (``policy_node``'s parameter of that name).

In the simulator inference takes no simulated time, so a chunk stamped ``now`` starts playing at once; on the
robot it arrives a model latency later and the executor skips what is already past.

:class:`SafetyGate` puts ``safety_node``'s :class:`~vla_safety.monitor.SafetyMonitor` between the driver and the
simulator, so that a closed-loop run ticked at about the node's control rate (``vla-eval --control-hz 48
--safety panda``) executes what the ROS stack would send the robot, and reports how often the monitor had to
limit a command.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from vla_common.policy import ActionChunk, Policy
from vla_safety.limits import load_limits
from vla_safety.monitor import JointCommand, JointStateSample, MonitorConfig, SafetyMonitor

from vla_policy.executor import ActionExecutor, ExecutorConfig, TickStatus

# A hair of slack so that "refill when less than X ahead" does not depend on float rounding of sim time.
_EPS = 1e-6


def refill_for_execute_steps(execute_steps: int, horizon: int, dt: float) -> float:
    """The ``refill_below_s`` that re-plans after ``execute_steps`` actions of an ``horizon``-step chunk."""
    if execute_steps < 1:
        raise ValueError(f"execute_steps must be >= 1, got {execute_steps}")
    steps = min(execute_steps, horizon)
    return (horizon - steps + 0.5) * dt


class ChunkDriver:
    """``act(observation, now)`` -> the action to apply for the next control period (dataset units)."""

    def __init__(
        self,
        policy: Policy,
        names: tuple[str, ...],
        *,
        refill_below_s: float,
        executor: ExecutorConfig | None = None,
        latency_s: float = 0.0,
        bounds: tuple[Any, Any] | None = None,
    ) -> None:
        if refill_below_s < 0:
            raise ValueError(f"refill_below_s must be >= 0, got {refill_below_s}")
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s}")
        self.policy = policy
        self.refill_below_s = refill_below_s
        # The model's latency in sim time: a chunk reaches the queue this long after its observation, as on
        # the robot, where the executor then skips the actions already past (0: at once, the sim's default).
        self.latency_s = latency_s
        self.queue = ActionExecutor(names, executor or ExecutorConfig(), bounds)  # bounds: as policy_node's
        self.inferences = 0
        self._in_flight: tuple[ActionChunk, float] | None = None  # a chunk and when it arrives

    def reset(self) -> None:
        """A new episode: nothing queued, the policy's own state cleared."""
        self.queue.clear()
        self.policy.reset()
        self.inferences = 0
        self._in_flight = None

    def act(self, observation: Mapping[str, Any], now: float) -> np.ndarray:
        """Infer when the queue runs low (as the node does, one inference at a time), then tick the executor."""
        if self._in_flight is not None and now + _EPS >= self._in_flight[1]:
            self.queue.push(self._in_flight[0], now)
            self._in_flight = None
        if self._in_flight is None and self.queue.remaining(now) < self.refill_below_s + _EPS:
            chunk = self.policy.infer({**observation, "timestamp": now})
            self.inferences += 1
            if self.latency_s > 0:
                self._in_flight = (chunk, now + self.latency_s)
            else:
                self.queue.push(chunk, now)
        tick = self.queue.tick(now)
        if tick.status is TickStatus.EMPTY or tick.action is None:
            # The node publishes nothing and the robot holds: in the simulator, hold the measured pose.
            return np.asarray(observation["observation.state"], dtype=np.float64)
        return tick.action


class SafetyGate:
    """``filter(command, measured, now)`` -> what ``safety_node`` would send the robot for this command.

    The monitor's limits come from a robot profile (``vla_safety/config/robots``); its other settings are
    :class:`~vla_safety.monitor.MonitorConfig`'s defaults, without the heartbeat watchdog (nothing beats here).
    Times are the simulator's: ``now`` serves as the command stamp, the watchdog clock and the motion clock.
    """

    def __init__(self, names: tuple[str, ...], profile: str = "panda") -> None:
        self.names = tuple(names)
        self.limits = load_limits(profile)  # the profile's joint limits
        self._config = MonitorConfig(joints=self.names, heartbeat_timeout=0.0)
        self.reset()

    def reset(self) -> None:
        """A new episode: a fresh monitor (armed on the first command, from the measured pose)."""
        self.monitor = SafetyMonitor(self.limits, self._config)

    @property
    def limited_fraction(self) -> float:
        """Share of commands so far that the monitor limited (clamped) or refused."""
        return self.monitor.counters.limited_fraction

    def filter(self, command: np.ndarray, measured: np.ndarray, now: float) -> np.ndarray:
        state = JointStateSample(self.names, [float(x) for x in measured], now)
        if not self.monitor.armed:
            self.monitor.arm(state, now)
        decision = self.monitor.check(JointCommand(self.names, [float(x) for x in command], now), state, now)
        if decision.positions is None:  # refused or holding with nothing to send: the robot keeps its pose
            return np.asarray(measured, dtype=np.float64)
        return np.asarray(decision.positions, dtype=np.float64)
