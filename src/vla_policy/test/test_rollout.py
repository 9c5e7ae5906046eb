"""ChunkDriver: a simulated episode driven through policy_node's ActionExecutor, re-planning by its rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from vla_common.policy import ActionChunk
from vla_policy.executor import BlendMode, ExecutorConfig
from vla_policy.rollout import ChunkDriver, SafetyGate, refill_for_execute_steps

NAMES = ("plan_step", "step")
DT = 0.1


class StepPolicy:
    """Chunk n (n = 1, 2, ...) holds ``actions[k] = (100 * n + k, s + k)``, ``s`` the control step it was
    inferred at: every played value says which chunk and which of its steps it came from."""

    def __init__(self, horizon: int, *, names: tuple[str, ...] = NAMES, delay_s: float = 0.0) -> None:
        self.horizon, self.names, self.delay_s = horizon, names, delay_s
        self.observations: list[dict] = []
        self.resets = 0

    def infer(self, observation):
        self.observations.append(dict(observation))
        stamp = float(observation["timestamp"])
        n, step = len(self.observations), round(stamp / DT)
        k = np.arange(self.horizon, dtype=float)
        return ActionChunk(np.stack([100 * n + k, step + k], axis=1), self.names, stamp + self.delay_s, DT)

    def reset(self) -> None:
        self.resets += 1

    @property
    def inferred_at(self) -> list[int]:
        """The control steps the policy was asked at."""
        return [round(o["timestamp"] / DT) for o in self.observations]


def observation(state=(0.5, -0.5)) -> dict:
    return {"observation.state": np.asarray(state, np.float32), "task": "push the red block left"}


def drive(driver: ChunkDriver, steps: int, start: float = 0.0) -> list[np.ndarray]:
    """``steps`` control periods of DT, the clock advanced as a simulator's integer step count / rate."""
    return [driver.act(observation(), start + i * 24 / 240) for i in range(steps)]


def make(horizon: int, execute_steps: int, **executor) -> tuple[ChunkDriver, StepPolicy]:
    policy = StepPolicy(horizon)
    refill = refill_for_execute_steps(execute_steps, horizon, DT)
    return ChunkDriver(policy, NAMES, refill_below_s=refill, executor=ExecutorConfig(**executor)), policy


@pytest.mark.parametrize("execute_steps", [1, 2, 3, 5])
def test_the_driver_replans_after_exactly_execute_steps_actions(execute_steps):
    driver, policy = make(horizon=6, execute_steps=execute_steps)
    drive(driver, 13)
    assert policy.inferred_at == list(range(0, 13, execute_steps))
    assert driver.inferences == math.ceil(13 / execute_steps)


@pytest.mark.parametrize("execute_steps", [6, 7, 50])
def test_execute_steps_beyond_the_horizon_replan_when_the_chunk_runs_out(execute_steps):
    driver, policy = make(horizon=6, execute_steps=execute_steps, blend=BlendMode.LATEST)
    played = drive(driver, 13)
    assert policy.inferred_at == [0, 6, 12]
    # Each chunk is used up when the next one comes: every step of each is played, once.
    assert [tuple(a) for a in played] == [(100 * (1 + i // 6) + i % 6, i) for i in range(13)]


def test_a_one_step_horizon_replans_every_step():
    driver, policy = make(horizon=1, execute_steps=5, blend=BlendMode.LATEST)
    played = drive(driver, 4)
    assert policy.inferred_at == [0, 1, 2, 3]
    assert [tuple(a) for a in played] == [(100 * (i + 1), i) for i in range(4)]


@pytest.mark.parametrize("execute_steps", [0, -1])
def test_execute_steps_below_one_are_refused(execute_steps):
    with pytest.raises(ValueError, match="execute_steps"):
        refill_for_execute_steps(execute_steps, 6, DT)


def test_a_negative_refill_threshold_is_refused():
    with pytest.raises(ValueError, match="refill_below_s"):
        ChunkDriver(StepPolicy(4), NAMES, refill_below_s=-0.01)


def test_the_policy_sees_the_observation_stamped_with_now():
    driver, policy = make(horizon=4, execute_steps=2)
    obs = observation((0.25, 0.75))
    driver.act(obs, 1.5)
    seen = policy.observations[0]
    assert seen["timestamp"] == 1.5 and seen["task"] == obs["task"]
    np.testing.assert_array_equal(seen["observation.state"], obs["observation.state"])
    assert "timestamp" not in obs  # the caller's observation is left as it was


def test_default_crossfade_plays_chunk_steps_on_time_and_blends_at_a_replan():
    # policy_node's default executor (CROSSFADE over 0.2 s, linear interpolation), re-planning every 3 steps.
    driver, policy = make(horizon=6, execute_steps=3)
    played = np.array(drive(driver, 8))
    assert policy.inferred_at == [0, 3, 6]
    expected = [
        (100, 0), (101, 1), (102, 2),  # chunk 1, action k at stamp + k * dt
        (103, 3),  # chunk 2 arrives at step 3 with weight 0: chunk 1 still plays
        (0.5 * 104 + 0.5 * 201, 4),  # half way through the 0.2 s crossfade
        (202, 5),  # chunk 2 alone (chunk 1 faded out)
        (203, 6),  # chunk 3 arrives with weight 0
        (0.5 * 204 + 0.5 * 301, 7),
    ]  # fmt: skip
    np.testing.assert_allclose(played, expected, atol=1e-9)


def test_latest_blend_switches_to_the_new_chunk_at_once():
    driver, policy = make(horizon=6, execute_steps=3, blend=BlendMode.LATEST)
    played = np.array(drive(driver, 7))
    assert policy.inferred_at == [0, 3, 6]
    np.testing.assert_allclose(played[:, 0], [100, 101, 102, 200, 201, 202, 300], atol=1e-9)
    np.testing.assert_allclose(played[:, 1], np.arange(7), atol=1e-9)


def test_the_driver_ticks_at_the_control_rate_between_chunk_steps():
    # Ticks faster than the chunk's dt: the executor interpolates between its steps, as in the node.
    driver, _ = make(horizon=6, execute_steps=6, blend=BlendMode.LATEST)
    played = [driver.act(observation(), t) for t in (0.0, 0.05, 0.1, 0.25)]
    np.testing.assert_allclose([a[0] for a in played], [100, 100.5, 101, 102.5], atol=1e-9)


def test_an_empty_executor_holds_the_measured_state():
    # The chunk starts 0.25 s after the observation: until then nothing covers now, and the driver returns the
    # observation's state (the robot holds); it does not ask again while the queued chunk reaches ahead.
    policy = StepPolicy(6, delay_s=0.25)
    driver = ChunkDriver(policy, NAMES, refill_below_s=refill_for_execute_steps(3, 6, DT))
    state = (0.125, -0.375)
    held = [driver.act(observation(state), t) for t in (0.0, 0.1, 0.2)]
    for action in held:
        assert action.dtype == np.float64
        np.testing.assert_array_equal(action, np.asarray(state, np.float32))
    assert driver.inferences == 1
    np.testing.assert_allclose(driver.act(observation(state), 0.3), [100.5, 0.5], atol=1e-9)


def test_a_refused_chunk_leaves_the_robot_holding_and_is_asked_again():
    policy = StepPolicy(4, names=("other", "names"))  # the executor refuses chunks of other action names
    driver = ChunkDriver(policy, NAMES, refill_below_s=refill_for_execute_steps(2, 4, DT))
    for t in (0.0, 0.1):
        np.testing.assert_array_equal(driver.act(observation((1.0, 2.0)), t), [1.0, 2.0])
    assert driver.inferences == 2 and driver.queue.refused_chunks == 2


def test_reset_clears_the_queue_and_the_policys_state():
    driver, policy = make(horizon=6, execute_steps=4)
    drive(driver, 2)
    assert driver.queue.remaining(0.1) > 0 and policy.resets == 0
    driver.reset()
    assert policy.resets == 1 and driver.inferences == 0
    assert driver.queue.remaining(0.1) == 0.0
    # A new episode restarts the simulator's clock: the new chunk plays at once (the old one is gone, so it
    # neither blends in nor makes the earlier-stamped new chunk out of order).
    np.testing.assert_allclose(driver.act(observation(), 0.0), [200, 0], atol=1e-9)
    assert policy.inferred_at == [0, 0]
    assert driver.inferences == 1


def test_safety_gate_passes_safe_commands_and_limits_the_rest_like_safety_node():
    from vla_common.robots import PANDA_COMMAND_JOINTS

    gate = SafetyGate(PANDA_COMMAND_JOINTS, "panda")
    home = np.array([0.0, -0.5, 0.0, -2.0, 0.0, 1.6, 0.8, 0.04])
    # A slow move at 50 Hz passes unchanged.
    slow = home + np.r_[np.full(7, 0.001), 0.0]
    np.testing.assert_allclose(gate.filter(slow, home, 0.02), slow)
    assert gate.limited_fraction == 0.0
    # A jump of 0.5 rad in one 20 ms tick exceeds joint 1's velocity and acceleration: scaled down, same direction.
    sent = gate.filter(home + np.r_[0.5, np.zeros(7)], slow, 0.04)
    assert 0.001 < sent[0] < 0.5 * 0.1 and gate.limited_fraction == 0.5
    # A non-finite command is refused: the measured pose holds.
    np.testing.assert_allclose(gate.filter(np.full(8, np.nan), home, 0.06), home)
    gate.reset()
    assert gate.limited_fraction == 0.0


def test_latency_delays_each_chunk_and_the_executor_skips_what_is_past():
    policy = StepPolicy(horizon=10)
    driver = ChunkDriver(policy, NAMES, refill_below_s=refill_for_execute_steps(5, 10, DT), latency_s=0.2,
                         executor=ExecutorConfig(blend=BlendMode.LATEST))  # fmt: skip
    state = np.array([-1.0, -1.0])
    played = [driver.act({"observation.state": state}, round(i * DT, 9)) for i in range(10)]
    # Nothing has arrived for 0.2 s: the measured pose holds.
    np.testing.assert_allclose(played[:2], [state, state])
    # Chunk 1 (asked at step 0) arrives at step 2 and plays from its step 2, as the node skips past actions.
    np.testing.assert_allclose(
        played[2:5], [[100, 2], [101, 3], [102, 4]][:0] or [[102, 2], [103, 3], [104, 4]]
    )
    # One inference at a time: the next is asked when the queue runs low (step 5), and plays from step 7.
    assert policy.inferred_at == [0, 5]
    np.testing.assert_allclose(played[7], [202, 7])
    with pytest.raises(ValueError, match="latency_s"):
        ChunkDriver(policy, NAMES, refill_below_s=0.1, latency_s=-0.1)
