"""Closed-loop scoring: jerk by finite differences on real receive times, per-family summary."""

import math

import numpy as np
import pytest
from vla_bringup.scoring import EpisodeRecord, markdown_table, mean_abs_jerk, summarize


def test_jerk_of_a_cubic_is_its_constant_third_derivative():
    t = np.linspace(0.0, 2.0, 41)
    q = np.stack([0.5 * t**3, -(t**3) / 6.0], axis=1)  # jerks 3 and -1
    assert mean_abs_jerk(t, q) == pytest.approx(2.0, rel=1e-6)


def test_jerk_of_a_constant_velocity_ramp_is_zero_and_of_a_jittery_stream_is_not():
    t = np.arange(0.0, 1.0, 0.02)
    q = (0.3 * t)[:, None]
    assert mean_abs_jerk(t, q) == pytest.approx(0.0, abs=1e-9)
    rng = np.random.default_rng(0)
    jittery = t + rng.uniform(-0.004, 0.004, size=t.shape)
    assert mean_abs_jerk(np.sort(jittery), q) > 1.0


def test_jerk_needs_four_samples_and_matching_shapes():
    assert math.isnan(mean_abs_jerk([0.0, 0.1, 0.2], [[0.0], [0.1], [0.2]]))
    with pytest.raises(ValueError, match="shape"):
        mean_abs_jerk([0.0, 0.1, 0.2, 0.3], [[0.0], [0.1]])


def test_summary_per_family():
    t = list(np.arange(0.0, 1.0, 0.05))
    ok = EpisodeRecord("pick", "pick up the red block", 0, t, [[x] for x in t], True, 4.0, 2, 20)
    ok2 = EpisodeRecord("pick", "lift the blue block", 1, t, [[x] for x in t], True, 6.0, 0, 20)
    bad = EpisodeRecord("stack", "put the red block on the blue block", 0, success=False)
    rows = {r.family: r for r in summarize([ok, ok2, bad])}
    assert rows["pick"].success_rate == 1.0
    assert rows["pick"].mean_time_to_success_s == pytest.approx(5.0)
    assert rows["pick"].intervention_rate == pytest.approx(2 / 40)
    assert rows["stack"].success_rate == 0.0 and math.isnan(rows["stack"].mean_abs_jerk)
    table = markdown_table(list(rows.values()))
    assert "| pick | 100% | 2 | 5.0 |" in table
    assert "| **all** | **67%** | 3 |" in table
