"""Embedded PyBullet Franka Panda tabletop simulator with language tasks, scripted experts, a ROS bridge and a Gymnasium env.

Gymnasium env (offline, no ROS)::

    import vla_sim
    env = vla_sim.make_env("stack", seed=0, cameras=("front", "wrist"), image_size=(128, 128),
                           control_hz=10.0, split="train")
    obs, info = env.reset()
    expert = vla_sim.experts.make_expert(env)
    obs, reward, terminated, truncated, info = env.step(expert.act_env())

``make_env(task=None, seed=None, cameras=("front",), image_size=(H, W), control_hz=10.0, split="train", **cfg)``
    ``task``: a family name (``pick``, ``stack``, ``push``, ``place``, ``stack_two``; a new task is sampled at
    every reset), an instruction text of any template, a :class:`vla_sim.tasks.Task`, or None (a random family
    each reset). ``split="heldout"`` draws the held-out instruction templates (evaluation only). Other
    :class:`vla_sim.env.EnvConfig` fields (``physics_hz``, ``terminate_on_success``, ``renderer="tiny"|"egl"``)
    by keyword. ``reset(options={"task": ...})`` changes the task for one episode.
Observation (dict keyed like dataset features)
    ``observation.images.<camera>``: HxWx3 uint8 RGB; cameras ``front`` (fixed, facing the robot across the
    table) and ``wrist`` (on the hand). ``observation.state``: float32[8] = ``panda_joint1..7`` (rad) +
    ``panda_finger_joint1`` (m, 0 closed .. 0.04 open). ``observation.velocity``: float32[8], same joints.
    ``observation.gripper``: float32[2], both finger positions (m). ``observation.environment_state``:
    float32[6], privileged ground truth for auxiliary losses and probes (never a policy input on a real
    robot): ``vla_sim.tasks.REFERENT_NAMES`` = target.x/y/z, goal.x/y/z, the named block and where it must
    go, in the robot base frame (m); see ``vla_sim.tasks.referent_positions``.
Action
    float32[8]: absolute joint position targets in the order of ``observation.state``; clipped into the joint
    limits; NaN/inf or a wrong shape raise ``ValueError``. One step = one control period
    (``physics_hz / control_hz`` physics steps, 240 Hz physics by default).
Reward, termination, info
    reward 1.0 when the task's success predicate holds, else 0.0; ``terminated`` on success (unless
    ``terminate_on_success=False``); ``truncated`` at the task's time limit. ``info``: ``success`` (bool),
    ``task`` (the instruction), ``family``, ``split``, ``step``, ``time_limit_steps``, ``sim_time``.
Expert (DAgger-ready: re-plans from the current state at every call)
    ``vla_sim.experts.make_expert(env).act_env()`` -> float32[8] for the env's current state; or, without an
    env, ``ScriptedExpert(task).act(joint_positions, world_state)``.
Tasks
    :mod:`vla_sim.tasks` is the one task definition: ``sample_task(family, rng, split)``,
    ``parse_instruction(text)``, ``is_success(task, world_state)``, ``FAMILIES`` (templates, time limits).

ROS: ``sim_node`` (the bridge) and ``expert_node`` (the expert as a teleoperator), see their modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vla_sim import experts as experts
    from vla_sim.env import VlaSimEnv as VlaSimEnv
    from vla_sim.env import make_env as make_env

__all__ = ["VlaSimEnv", "experts", "make_env"]


def __getattr__(name: str) -> Any:
    # Lazy: importing vla_sim.tasks must not load pybullet.
    # import_module, not ``from vla_sim import x``: that form asks this very __getattr__ first and recurses
    if name in ("make_env", "VlaSimEnv"):
        return getattr(importlib.import_module("vla_sim.env"), name)
    if name == "experts":
        return importlib.import_module("vla_sim.experts")
    raise AttributeError(f"module 'vla_sim' has no attribute {name!r}")
