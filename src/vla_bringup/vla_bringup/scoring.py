"""Closed-loop episode scoring for runs through the real stack (pure Python, no rclpy).

An :class:`EpisodeRecord` is what the harness saw on the topics during one episode: the commanded joint
positions on ``/joint_commands`` with their receive times, whether and when the simulator reported success,
and how often the safety monitor intervened. :func:`summarize` turns records into per-family rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class EpisodeRecord:
    family: str
    instruction: str
    seed: int
    command_times: list[float] = field(default_factory=list)  # seconds, monotonic or sim time
    commands: list[Sequence[float]] = field(default_factory=list)  # commanded arm joint positions (rad)
    success: bool = False
    time_to_success_s: float | None = None
    safety_interventions: int = 0  # commands the monitor clamped, rejected or replaced by a hold
    safety_decisions: int = 0


def mean_abs_jerk(times: Sequence[float], positions: Sequence[Sequence[float]]) -> float:
    """Mean absolute jerk (rad/s^3) of a commanded joint trajectory, by third finite differences.

    Uses the actual receive times (not a nominal rate), so a jittery command stream scores as jerky.
    Returns NaN for fewer than four samples.
    """
    t = np.asarray(times, dtype=np.float64)
    q = np.asarray(positions, dtype=np.float64)
    if len(t) < 4:
        return math.nan
    if q.ndim != 2 or q.shape[0] != len(t):
        raise ValueError(f"positions must be [N, joints] with N={len(t)}, got shape {q.shape}")
    dt = np.diff(t)
    if np.any(dt <= 0):
        keep = np.concatenate([[True], dt > 0])
        t, q = t[keep], q[keep]
        if len(t) < 4:
            return math.nan
    vel = np.diff(q, axis=0) / np.diff(t)[:, None]
    tv = (t[1:] + t[:-1]) / 2
    acc = np.diff(vel, axis=0) / np.diff(tv)[:, None]
    ta = (tv[1:] + tv[:-1]) / 2
    jerk = np.diff(acc, axis=0) / np.diff(ta)[:, None]
    return float(np.mean(np.abs(jerk)))


@dataclass(frozen=True)
class FamilyRow:
    family: str
    episodes: int
    successes: int
    mean_time_to_success_s: float
    mean_abs_jerk: float
    intervention_rate: float  # interventions / safety decisions

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes if self.episodes else 0.0


def summarize(records: Iterable[EpisodeRecord]) -> list[FamilyRow]:
    by_family: dict[str, list[EpisodeRecord]] = {}
    for r in records:
        by_family.setdefault(r.family, []).append(r)
    rows = []
    for family, recs in by_family.items():
        times = [r.time_to_success_s for r in recs if r.success and r.time_to_success_s is not None]
        jerks = [j for r in recs if not math.isnan(j := mean_abs_jerk(r.command_times, r.commands))]
        decisions = sum(r.safety_decisions for r in recs)
        rows.append(
            FamilyRow(
                family=family,
                episodes=len(recs),
                successes=sum(r.success for r in recs),
                mean_time_to_success_s=float(np.mean(times)) if times else math.nan,
                mean_abs_jerk=float(np.mean(jerks)) if jerks else math.nan,
                intervention_rate=sum(r.safety_interventions for r in recs) / decisions if decisions else 0.0,
            )
        )
    return rows


def markdown_table(rows: Sequence[FamilyRow]) -> str:
    def fmt(x: float, spec: str) -> str:
        return "n/a" if math.isnan(x) else format(x, spec)

    lines = [
        "| family | success | episodes | time to success (s) | mean abs jerk (rad/s³) | safety interventions |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.family} | {r.success_rate:.0%} | {r.episodes} | {fmt(r.mean_time_to_success_s, '.1f')} "
            f"| {fmt(r.mean_abs_jerk, '.2f')} | {r.intervention_rate:.1%} |"
        )
    total = sum(r.episodes for r in rows)
    if total:
        overall = sum(r.successes for r in rows) / total
        lines.append(f"| **all** | **{overall:.0%}** | {total} | | | |")
    return "\n".join(lines)
