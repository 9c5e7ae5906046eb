"""Properties of the sampler over random streams: exact tick spacing, causal observations, the action rule,
and the same frames whether the clock is driven message by message (live) or the bag is read at once."""

from hypothesis import given, settings
from hypothesis import strategies as st
from vla_collector.sampler import NS, FrameSampler, SamplerConfig

MS = 1_000_000


@st.composite
def random_streams(draw):
    """Three streams with random rates and jitter, up to 3 s."""
    events = []
    for kind, lo, hi in (("state", 20, 200), ("cam", 5, 40), ("action", 5, 100)):
        hz = draw(st.integers(lo, hi))
        jitter = draw(st.lists(st.integers(0, 8), min_size=400, max_size=400))
        t = draw(st.integers(0, 50))
        for j in jitter:
            if t > 3000:
                break
            events.append((t * MS + j * MS // 2, kind))
            t += 1000 // hz
    return sorted(events)


def run(events, fps, live):
    s = FrameSampler(SamplerConfig(fps=fps, max_wait_s=10.0))
    frames = []
    for ns, kind in events:
        if kind == "state":
            s.add_state(ns, ns)
        elif kind == "cam":
            s.add_image("front", ns, ns)
        else:
            s.add_action(ns, ns)
        if live:
            frames += s.advance(ns)
    tail, report = s.finish(events[-1][0] + 1)
    return frames + tail, report


@settings(max_examples=40, deadline=None)
@given(random_streams(), st.sampled_from([5, 10, 15, 30]))
def test_sampling_rules_hold_for_any_streams(events, fps):
    frames, report = run(events, fps, live=True)
    offline, _ = run(events, fps, live=False)
    assert [(f.t_ns, f.state.payload, f.action.payload, f.images["front"].payload) for f in frames] == [
        (f.t_ns, f.state.payload, f.action.payload, f.images["front"].payload) for f in offline
    ]
    lookahead = NS // fps
    t0 = frames[0].t_ns if frames else 0
    for k, f in enumerate(frames):
        assert f.t_ns == t0 + k * NS // fps
        assert f.state.stamp_ns <= f.t_ns and f.images["front"].stamp_ns <= f.t_ns
        later_states = [ns for ns, kind in events if kind == "state" and f.state.stamp_ns < ns <= f.t_ns]
        assert not later_states  # the latest one, not just any earlier one
        commands = [ns for ns, kind in events if kind == "action" and ns < f.t_ns + lookahead]
        if commands:
            assert f.action.stamp_ns == max(commands)
    assert report.frames == len(frames) and 0 <= report.dropped_frames <= report.frames
