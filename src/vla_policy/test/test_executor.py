"""The action queue and executor with a fake clock: timing, interpolation, blending, stale actions."""

import math

import numpy as np
import pytest
from vla_common.policy import ActionChunk
from vla_policy.executor import (
    ActionExecutor,
    BlendMode,
    ExecutorConfig,
    Interpolation,
    PushStatus,
    TickStatus,
)

NAMES = ("a", "b")


def ramp_chunk(stamp, start, horizon=10, dt=0.1, slope=1.0):
    """actions[k] = start + slope * k on both dims."""
    values = start + slope * np.arange(horizon, dtype=float)
    return ActionChunk(np.stack([values, -values], axis=1), NAMES, stamp, dt)


def const_chunk(stamp, value, horizon=10, dt=0.1):
    return ActionChunk(np.full((horizon, 2), float(value)), NAMES, stamp, dt)


def make(**kw):
    return ActionExecutor(NAMES, ExecutorConfig(**kw))


def test_empty_queue_holds():
    ex = make()
    tick = ex.tick(5.0)
    assert tick.status is TickStatus.EMPTY
    assert tick.action is None
    assert math.isnan(tick.chunk_age_s)
    assert ex.remaining(5.0) == 0.0


def test_actions_are_clipped_into_the_bounds():
    ex = ActionExecutor(NAMES, ExecutorConfig(blend=BlendMode.LATEST), bounds=([-1.0, -2.5], [2.5, 0.5]))
    ex.push(ramp_chunk(0.0, 0.0), now=0.0)  # a = k, b = -k
    np.testing.assert_allclose(ex.tick(0.0).action, [0.0, 0.0])
    np.testing.assert_allclose(ex.tick(0.3).action, [2.5, -2.5])  # 3 and -3 clipped
    with pytest.raises(ValueError, match="bounds"):
        ActionExecutor(NAMES, bounds=([0.0], [1.0]))
    with pytest.raises(ValueError, match="bounds"):
        ActionExecutor(NAMES, bounds=([0.0, 2.0], [1.0, 1.0]))


def test_linear_interpolation_between_chunk_steps_at_control_rate():
    ex = make(blend=BlendMode.LATEST)
    assert ex.push(ramp_chunk(10.0, 0.0), now=10.0) is PushStatus.ACCEPTED
    # 50 Hz ticks over a 10 Hz chunk: values follow the ramp exactly, in between steps too.
    for i in range(40):
        now = 10.0 + i * 0.02
        tick = ex.tick(now)
        assert tick.status is TickStatus.ACTION
        np.testing.assert_allclose(tick.action, [i * 0.2, -i * 0.2], atol=1e-9)
        assert tick.chunk_age_s == pytest.approx(i * 0.02)


def test_cubic_interpolation_passes_the_actions_with_continuous_velocity():
    # A chunk that accelerates then turns: x_k = k^2 for k < 5, then back down.
    values = np.array([0, 1, 4, 9, 16, 20, 21, 19, 15, 10], dtype=float)
    chunk = ActionChunk(np.stack([values, -values], axis=1), NAMES, 0.0, 0.1)
    cubic, linear = make(blend="latest", interpolation="cubic"), make(blend="latest", interpolation="linear")
    cubic.push(chunk, now=0.0)
    linear.push(chunk, now=0.0)
    ticks = np.arange(0.0, 0.9 + 1e-9, 0.02)
    c = np.array([cubic.tick(t).action[0] for t in ticks])
    lin = np.array([linear.tick(t).action[0] for t in ticks])
    knots = np.round(ticks / 0.1, 6) == np.round(ticks / 0.1)
    np.testing.assert_allclose(c[knots], values[: knots.sum()], atol=1e-9)  # through every action
    # Velocity changes per tick (the acceleration the safety monitor sees): far smaller than linear's.
    assert np.abs(np.diff(c, 2)).max() < 0.5 * np.abs(np.diff(lin, 2)).max()
    # A straight ramp stays exact (the tangents of a line are its slope).
    ramp = make(blend="latest", interpolation="cubic")
    ramp.push(ramp_chunk(0.0, 0.0), now=0.0)
    np.testing.assert_allclose([ramp.tick(t).action[0] for t in ticks], ticks * 10.0, atol=1e-9)


def test_hold_interpolation_steps():
    ex = make(blend=BlendMode.LATEST, interpolation=Interpolation.HOLD)
    ex.push(ramp_chunk(0.0, 0.0), now=0.0)
    np.testing.assert_allclose(ex.tick(0.05).action, [0.0, -0.0])
    np.testing.assert_allclose(ex.tick(0.19).action, [1.0, -1.0])
    np.testing.assert_allclose(ex.tick(0.2).action, [2.0, -2.0])


def test_actions_in_the_past_are_skipped_on_arrival():
    ex = make(blend=BlendMode.LATEST)
    # The observation was taken at t=0; the model took 0.25 s: steps 0 and 1 are already past.
    status = ex.push(ramp_chunk(0.0, 0.0), now=0.25)
    assert status is PushStatus.ACCEPTED
    assert ex.skipped_actions == 2
    tick = ex.tick(0.25)
    np.testing.assert_allclose(tick.action, [2.5, -2.5])  # halfway from step 2 to 3, never steps 0 and 1
    assert tick.chunk_age_s == pytest.approx(0.25)


def test_chunk_expires_after_its_last_step_holds_one_dt():
    ex = make(blend=BlendMode.LATEST)
    ex.push(ramp_chunk(0.0, 0.0, horizon=5), now=0.0)
    np.testing.assert_allclose(ex.tick(0.45).action, [4.0, -4.0])  # last step holds for one dt
    assert ex.remaining(0.45) == pytest.approx(0.05)
    tick = ex.tick(0.5)
    assert tick.status is TickStatus.EMPTY
    assert tick.queued_chunks == 0


def test_tail_hold_keeps_a_late_single_step_chunk():
    """OpenVLA-style: one action per inference, slower than dt. Strict, it is never played; with a tail hold
    it is played (held) until the next one, and the queue's nominal depth stays 0 so inference goes on."""
    one_step = ActionChunk(np.ones((1, 2)), NAMES, 0.0, 0.1)
    assert make().push(one_step, now=0.2) is PushStatus.STALE
    ex = make(tail_hold_s=0.3)
    assert ex.push(one_step, now=0.2) is PushStatus.ACCEPTED
    assert ex.skipped_actions == 0  # its only action is the one to play
    np.testing.assert_allclose(ex.tick(0.3).action, [1.0, 1.0])
    assert ex.remaining(0.3) == 0.0
    assert ex.tick(0.4).status is TickStatus.EMPTY


def test_stale_chunks_are_refused():
    ex = make(max_chunk_age_s=0.5)
    assert ex.push(ramp_chunk(0.0, 0.0), now=0.6) is PushStatus.STALE  # older than max age
    assert ex.push(ramp_chunk(0.0, 0.0, horizon=2), now=0.3) is PushStatus.STALE  # wholly past
    assert ex.refused_chunks == 2
    assert ex.tick(0.6).status is TickStatus.EMPTY


def test_out_of_order_and_wrong_names_are_refused():
    ex = make()
    assert ex.push(const_chunk(1.0, 0.0), now=1.0) is PushStatus.ACCEPTED
    assert ex.push(const_chunk(0.9, 5.0), now=1.0) is PushStatus.OUT_OF_ORDER
    other = ActionChunk(np.zeros((3, 2)), ("b", "a"), 1.0, 0.1)
    assert ex.push(other, now=1.0) is PushStatus.NAME_MISMATCH
    np.testing.assert_allclose(ex.tick(1.0).action, [0.0, 0.0])


def test_clear_empties_the_queue_and_refuses_chunks_of_the_old_epoch():
    ex = make()
    epoch = ex.epoch
    ex.push(const_chunk(0.0, 1.0), now=0.0, epoch=epoch)
    new_epoch = ex.clear()  # a new instruction
    assert new_epoch != epoch
    assert ex.tick(0.05).status is TickStatus.EMPTY
    # A chunk computed for the old instruction, arriving late, must not be played.
    assert ex.push(const_chunk(0.05, 1.0), now=0.1, epoch=epoch) is PushStatus.OUTDATED_EPOCH
    assert ex.push(const_chunk(0.05, 2.0), now=0.1, epoch=new_epoch) is PushStatus.ACCEPTED
    np.testing.assert_allclose(ex.tick(0.1).action, [2.0, 2.0])


def test_latest_switches_abruptly():
    ex = make(blend=BlendMode.LATEST)
    ex.push(const_chunk(0.0, 0.0), now=0.0)
    ex.push(const_chunk(0.2, 1.0), now=0.3)
    np.testing.assert_allclose(ex.tick(0.3).action, [1.0, 1.0])


def test_temporal_ensemble_weights_follow_act():
    m = 0.5
    ex = make(blend=BlendMode.TEMPORAL_ENSEMBLE, ensemble_decay=m)
    ex.push(const_chunk(0.0, 0.0), now=0.0)
    ex.push(const_chunk(0.1, 1.0), now=0.1)
    ex.push(const_chunk(0.2, 2.0), now=0.2)
    w = np.exp(-m * np.arange(3))
    expected = (w @ np.array([0.0, 1.0, 2.0])) / w.sum()
    tick = ex.tick(0.25)
    np.testing.assert_allclose(tick.action, [expected, expected])
    assert tick.chunk_age_s == pytest.approx(0.05)  # the newest contributing chunk
    assert tick.queued_chunks == 3


def test_temporal_ensemble_ignores_chunks_that_no_longer_cover_now():
    ex = make(blend=BlendMode.TEMPORAL_ENSEMBLE, ensemble_decay=0.0)
    ex.push(const_chunk(0.0, 0.0, horizon=2), now=0.0)  # covers [0, 0.2)
    ex.push(const_chunk(0.1, 4.0), now=0.1)
    np.testing.assert_allclose(ex.tick(0.15).action, [2.0, 2.0])
    np.testing.assert_allclose(ex.tick(0.2).action, [4.0, 4.0])


def test_crossfade_ramps_from_old_to_new_chunk():
    ex = make(blend=BlendMode.CROSSFADE, crossfade_s=0.2)
    ex.push(const_chunk(0.0, 0.0), now=0.0)
    ex.push(const_chunk(0.3, 1.0), now=0.4)  # arrives at 0.4: fades in over [0.4, 0.6]
    np.testing.assert_allclose(ex.tick(0.4).action, [0.0, 0.0])
    np.testing.assert_allclose(ex.tick(0.45).action, [0.25, 0.25])
    np.testing.assert_allclose(ex.tick(0.5).action, [0.5, 0.5])
    np.testing.assert_allclose(ex.tick(0.6).action, [1.0, 1.0])
    assert ex.tick(0.61).queued_chunks == 1  # the faded-out chunk is dropped


def test_crossfade_bounds_the_step_at_a_chunk_boundary():
    """Two chunks that disagree by 1.0: LATEST jumps by 1.0 in one tick, CROSSFADE by at most the ramp."""
    steps = {}
    for mode in (BlendMode.LATEST, BlendMode.CROSSFADE):
        ex = make(blend=mode, crossfade_s=0.2)
        ex.push(const_chunk(0.0, 0.0, horizon=20), now=0.0)
        previous = None
        biggest = 0.0
        for i in range(60):
            now = i * 0.02
            if i == 25:
                ex.push(const_chunk(0.4, 1.0, horizon=20), now=now)
            tick = ex.tick(now)
            if previous is not None:
                biggest = max(biggest, float(np.max(np.abs(tick.action - previous))))
            previous = tick.action
        steps[mode] = biggest
    assert steps[BlendMode.LATEST] == pytest.approx(1.0)
    assert steps[BlendMode.CROSSFADE] == pytest.approx(0.02 / 0.2)


def test_remaining_and_max_chunks():
    ex = make(max_chunks=2)
    for i in range(4):
        ex.push(const_chunk(i * 0.1, i), now=i * 0.1)
    assert ex.tick(0.3).queued_chunks <= 2
    assert ex.remaining(0.3) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kw",
    [
        {"crossfade_s": -1.0},
        {"max_chunk_age_s": 0.0},
        {"max_chunks": 0},
        {"tail_hold_s": -0.1},
        {"ensemble_decay": math.nan},
        {"blend": "sideways"},
    ],
)
def test_bad_config_is_refused(kw):
    with pytest.raises(ValueError):
        ExecutorConfig(**kw)


def test_config_accepts_enum_values_by_name():
    cfg = ExecutorConfig(blend="temporal_ensemble", interpolation="hold")
    assert cfg.blend is BlendMode.TEMPORAL_ENSEMBLE
    assert cfg.interpolation is Interpolation.HOLD
