"""The fixed-rate sampler: tick placement, causality, action lookahead, drops, gaps and the verdict."""

import pytest
from vla_collector.sampler import NS, EpisodeVerdict, FrameSampler, SamplerConfig, joint_vector

MS = 1_000_000


def feed(sampler, until_ms, state_hz=100, cam_hz=30, action_hz=100, skip_cam=(), start_ms=0):
    """Synthetic streams; payload = stamp in ms so tests can see what was chosen."""
    events = []
    for hz, kind in ((state_hz, "state"), (cam_hz, "cam"), (action_hz, "action")):
        k = 0
        while (t := start_ms + k * 1000 / hz) <= until_ms:
            if not (kind == "cam" and any(a <= t < b for a, b in skip_cam)):
                events.append((t, kind))
            k += 1
    frames = []
    for t, kind in sorted(events):
        ns = int(t * MS)
        if kind == "state":
            sampler.add_state(ns, t)
        elif kind == "cam":
            sampler.add_image("front", ns, t)
        else:
            sampler.add_action(ns, t)
        frames += sampler.advance(ns)
    return frames


def test_ticks_are_exact_and_observations_causal():
    s = FrameSampler(SamplerConfig(fps=10), task="pick")
    frames = feed(s, 2000)
    tail, report = s.finish(2000 * MS)
    frames += tail
    assert [f.t_ns for f in frames] == [k * NS // 10 for k in range(len(frames))]
    assert len(frames) == 20  # ticks 0.0..1.9 s: the last needs commands up to 2.0 s
    for f in frames:
        assert f.state.stamp_ns <= f.t_ns and f.images["front"].stamp_ns <= f.t_ns
        assert f.t_ns < f.action.stamp_ns + 1 <= f.t_ns + NS // 10  # the command issued during the frame
        assert f.task == "pick" and f.fresh
    assert report.verdict is EpisodeVerdict.ACCEPTED and report.real_rate_hz == pytest.approx(10)
    assert report.streams["camera/front"]["rate_hz"] == pytest.approx(30, rel=0.01)
    assert report.largest_gap_s == pytest.approx(1 / 30, abs=1e-3)


def test_a_tick_is_decided_when_every_stream_moved_past_it_or_after_max_wait():
    s = FrameSampler(SamplerConfig(fps=10, max_wait_s=0.5))
    for t in (0, 10):
        s.add_state(t * MS, t)
        s.add_image("front", t * MS, t)
        s.add_action(t * MS, t)
    # commands up to 100 ms could still be in flight: tick 0 waits for them, or for 100 + 500 ms
    assert s.advance(599 * MS) == []
    assert [f.index for f in s.advance(600 * MS)] == [0]
    # tick 1 (100 ms) is decided the moment all streams have passed it, long before its timeout
    s.add_state(120 * MS, 120)
    s.add_image("front", 120 * MS, 120)
    assert s.advance(120 * MS) == []
    s.add_action(205 * MS, 205)
    [frame] = s.advance(205 * MS)
    assert frame.t_ns == 100 * MS and frame.action.payload == 10 and frame.state.payload == 10


def test_a_stalled_camera_drops_frames_and_refuses_the_episode():
    s = FrameSampler(SamplerConfig(fps=10, rate_tolerance=0.05, max_gap_s=5.0))
    frames = feed(s, 3000, skip_cam=[(1000, 1600)])
    tail, report = s.finish(3000 * MS)
    frames += tail
    late = [f for f in frames if not f.fresh]
    assert late and all(f.late_streams == ("camera/front",) for f in late)
    assert report.dropped_frames == len(late) and report.verdict is EpisodeVerdict.RATE_TOO_LOW
    assert "camera/front" in report.reason and report.largest_gap_stream == "camera/front"
    assert report.largest_gap_s == pytest.approx(0.6 + 1 / 30, abs=0.02)
    # frames keep their clock: timestamps do not pretend the gap away
    assert [f.t_ns for f in frames] == [k * NS // 10 for k in range(len(frames))]


def test_a_long_gap_alone_refuses_the_episode():
    # 15 % drops tolerated, but the camera's 0.4 s gap exceeds max_gap 0.3 s
    s = FrameSampler(SamplerConfig(fps=10, rate_tolerance=0.5, max_gap_s=0.3))
    feed(s, 3000, skip_cam=[(1000, 1400)])
    _, report = s.finish(3000 * MS)
    assert report.verdict is EpisodeVerdict.GAP_TOO_LONG and "camera/front" in report.reason


def test_a_slow_camera_is_a_rate_problem_not_a_silent_duplicate():
    s = FrameSampler(SamplerConfig(fps=10))
    feed(s, 3000, cam_hz=5)
    _, report = s.finish(3000 * MS)
    assert report.verdict is EpisodeVerdict.RATE_TOO_LOW
    assert report.streams["camera/front"]["distinct_samples"] < report.frames


def test_nothing_to_sample_is_reported_empty_and_names_the_missing_stream():
    s = FrameSampler(SamplerConfig(fps=10, cameras=("front", "wrist")))
    feed(s, 1000)
    frames, report = s.finish(1000 * MS)
    assert frames == [] and report.verdict is EpisodeVerdict.EMPTY and "camera/wrist" in report.reason


def test_instruction_changes_apply_from_their_time_and_start_is_respected():
    s = FrameSampler(SamplerConfig(fps=10), start_ns=500 * MS)
    s.set_task(0, "first")
    s.set_task(1000 * MS, "second")
    frames = feed(s, 2000)
    frames += s.finish(2000 * MS)[0]
    assert frames[0].t_ns == 500 * MS
    assert {f.task for f in frames if f.t_ns < NS} == {"first"}
    assert {f.task for f in frames if f.t_ns >= NS} == {"second"}


def test_out_of_order_messages_are_sorted_and_counted():
    s = FrameSampler(SamplerConfig(fps=10))
    feed(s, 500)
    s.add_state(450 * MS, "late")
    assert s.report().streams["state"]["out_of_order"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"fps": 0},
        {"fps": 2.5},
        {"rate_tolerance": 1.0},
        {"max_gap_s": 0},
        {"max_wait_s": -1},
        {"cameras": ("a", "a")},
    ],
)
def test_bad_config_is_refused(kwargs):
    with pytest.raises(ValueError):
        SamplerConfig(**kwargs)


def test_joint_vector_orders_and_names_missing_joints():
    assert joint_vector(["b", "a"], [2.0, 1.0], ["a", "b"]) == [1.0, 2.0]
    with pytest.raises(KeyError, match="'c'"):
        joint_vector(["a"], [1.0], ["a", "c"])
    with pytest.raises(ValueError, match="positions"):
        joint_vector(["a", "b"], [1.0], ["a"])


def feed_received(sampler, until_ms, delay_ms, skip_cam=()):
    """Like ``feed``, but each message reaches the recorder ``delay_ms`` after its stamp (advance_received)."""
    events = []
    for hz, kind in ((100, "state"), (30, "cam"), (100, "action")):
        k = 0
        while (t := k * 1000 / hz) <= until_ms:
            if not (kind == "cam" and any(a <= t < b for a, b in skip_cam)):
                events.append((t, kind))
            k += 1
    frames = []
    for t, kind in sorted(events):
        ns = int(t * MS)
        {"state": sampler.add_state, "action": sampler.add_action}.get(
            kind, lambda n, p: sampler.add_image("front", n, p)
        )(ns, t)
        frames += sampler.advance_received(ns + delay_ms * MS)
    return frames


def test_a_delay_that_holds_back_every_stream_is_not_a_stall():
    # every message reaches the recorder 0.8 s after its stamp (a busy transport or executor): longer than
    # lookahead + max_wait (0.6 s). By the receive clock every tick would be judged before its data arrived;
    # by the stamps no stream is behind the others, so every frame is fresh.
    s = FrameSampler(SamplerConfig(fps=10, max_wait_s=0.5))
    frames = feed_received(s, 2000, delay_ms=800)
    assert len(frames) >= 18 and all(f.fresh for f in frames)
    assert [f.t_ns for f in frames] == [k * NS // 10 for k in range(len(frames))]
    clocked = FrameSampler(SamplerConfig(fps=10, max_wait_s=0.5))
    events = [(int(t * 10 * MS), t) for t in range(201)]
    late = []
    for ns, payload in events:  # the same streams judged by the receive clock (what the recorder once did)
        clocked.add_state(ns, payload)
        clocked.add_action(ns, payload)
        if payload % 3 == 0:
            clocked.add_image("front", ns, payload)
        late += [f for f in clocked.advance(ns + 800 * MS) if not f.fresh]
    assert late  # which is why the recorder and the converter both use advance_received


def test_a_stalled_stream_is_judged_by_the_others_moving_on():
    s = FrameSampler(SamplerConfig(fps=10, max_wait_s=0.5, rate_tolerance=0.05, max_gap_s=5.0))
    frames = feed_received(s, 3000, delay_ms=5, skip_cam=[(1000, 1600)])
    late = [f for f in frames if not f.fresh]
    assert late and all(f.late_streams == ("camera/front",) for f in late)
    # the ticks of the pause were decided while the camera was silent: 0.5 s after the others moved past
    assert [f.t_ns for f in frames] == [k * NS // 10 for k in range(len(frames))] and len(frames) >= 28


def test_a_stream_stamped_ahead_of_the_receive_clock_cannot_rush_the_others():
    s = FrameSampler(SamplerConfig(fps=10, max_wait_s=0.5))
    for t in range(0, 200, 10):
        s.add_state(t * MS, t)
        s.add_image("front", t * MS, t)
    s.add_action(0, 0)
    s.add_action(50_000 * MS, "wrong clock")  # a command stamped 50 s ahead, received at 200 ms
    # ticks 0 and 100 ms are decided by the data; later ones wait: the clock is min(receive, newest stamp),
    # 200 ms, not the command's 50 s (which would decide every tick up to 49 s with stale data at once)
    assert [f.t_ns for f in s.advance_received(200 * MS)] == [0, 100 * MS]
