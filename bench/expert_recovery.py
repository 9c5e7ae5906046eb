"""Does the scripted expert recover from states off its own path? (Are its DAgger labels good there?)

A *perturbing driver* acts for the first k steps of an episode, then the scripted expert alone drives until
the episode ends; the expert's success after hand-over at k > 0, against k = 0 (the expert from the start),
says how good its labels are on the states the driver left. No training involved.

    python bench/expert_recovery.py --driver policy:outputs/runs/pick_abs/best --families pick
    python bench/expert_recovery.py --driver noise:0.05             # all four families
    python bench/expert_recovery.py --driver noise:0.05 --quick     # 5 seeds

Drivers:
- ``policy:<checkpoint dir>``: a trained policy through :class:`vla_policy.rollout.ChunkDriver`, built as
  ``vla-dagger collect`` builds it (re-planning after ``--execute-steps`` actions); the env renders the
  policy's cameras at its image size (front+wrist 96x96 for the native VLA).
- ``noise:<sigma>``: the expert's own action plus Gaussian noise of sigma rad on the 7 arm joints, the gripper
  command flipped (open <-> closed) with probability 0.1 per step. No cameras (nothing looks at images).

Expert memory (``--memory``): ``continuous`` (default) is what ``vla-dagger collect`` does: the expert is
asked for a label at every step, also while the driver drives, so its one piece of memory (the re-grasp flag:
fingers closed on nothing, open before closing again) follows the whole episode. ``fresh``: a new expert at
hand-over (its flag cleared), as a separate run.

An episode that succeeds while the driver drives ends there (the env terminates on success): it is counted
as "done before hand-over" and left out of the expert's rate. Seeds start at 5000 (unseen by training).
Besides the success table the script classifies the state at hand-over (gripper: holding the task's block,
holding another, closed on nothing, part-closed, open; the task's block moved/tilted) and lists every
failure with the state the episode ended in. Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from vla_sim.env import make_env
from vla_sim.experts import (
    CLOSED_ON_NOTHING,
    OPEN_ENOUGH,
    ExpertConfig,
    ScriptedExpert,
    held_block,
)
from vla_sim.robot import FINGER_CLOSED, FINGER_OPEN, PandaKinematics, clip_command
from vla_sim.tasks import FAMILIES, TaskFamily, push_displacement

GRIPPER_FLIP_P = 0.1


class PolicyDriver:
    """A trained policy driving through policy_node's action executor (as ``vla-dagger collect``)."""

    def __init__(self, checkpoint: str, execute_steps: int) -> None:
        from vla_policy.models.policy import load_policy
        from vla_policy.rollout import ChunkDriver, refill_for_execute_steps

        self.policy = load_policy(checkpoint)
        cams = self.policy.manifest.cameras
        if not cams or len({(c.height, c.width) for c in cams}) != 1:
            raise SystemExit(f"{checkpoint}: the simulator renders one image size; the policy wants {cams}")
        self.cameras = tuple(self.policy.config.camera_names)
        self.image_size = (cams[0].height, cams[0].width)
        self.fps = float(self.policy.manifest.fps)
        refill = refill_for_execute_steps(execute_steps, self.policy.horizon, self.policy.dt)
        self.chunks = ChunkDriver(self.policy, self.policy.manifest.action_names, refill_below_s=refill)
        self.needs_label = False

    def reset(self, seed: int) -> None:
        self.chunks.reset()

    def act(self, obs: dict[str, Any], info: dict[str, Any], label: np.ndarray | None) -> np.ndarray:
        return self.chunks.act({**obs, "task": info["task"]}, info["sim_time"])


class NoiseDriver:
    """The expert's action plus joint noise; the gripper command flipped now and then."""

    def __init__(self, sigma: float) -> None:
        if sigma < 0:
            raise SystemExit("noise sigma must be >= 0")
        self.sigma = sigma
        self.cameras: tuple[str, ...] = ()
        self.image_size = (96, 96)
        self.fps = 10.0
        self.needs_label = True
        self.rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: dict[str, Any], info: dict[str, Any], label: np.ndarray | None) -> np.ndarray:
        assert label is not None
        action = np.array(label, dtype=np.float64)
        action[:7] += self.rng.normal(0.0, self.sigma, 7)
        if self.rng.random() < GRIPPER_FLIP_P:
            action[7] = FINGER_CLOSED if action[7] > FINGER_OPEN / 2 else FINGER_OPEN
        return clip_command(action)


def tilt_deg(orientation: tuple[float, float, float, float]) -> float:
    """How far a cube is from resting on one of its faces: 0 when some face is down, up to ~55 deg."""
    x, y, z, w = orientation
    # The third row of the rotation matrix: world z expressed along each block axis.
    row = np.array([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)])
    return math.degrees(math.acos(min(1.0, float(np.max(np.abs(row))))))


def describe(env: Any, kinematics: PandaKinematics, expert: ScriptedExpert) -> dict[str, Any]:
    """The state the expert is in now: gripper, the task's block, the expert's re-grasp flag."""
    joints = env.scene.joint_positions()
    world = env.scene.world_state()
    grasp_point, _ = kinematics.grasp_pose(joints[:7])
    opening = float(joints[7])
    block_name = env.task.slots["block"]
    held = held_block(grasp_point, opening, world)
    if held == block_name:
        gripper = "holding block"
    elif held is not None:
        gripper = "holding other"
    elif opening < CLOSED_ON_NOTHING:
        gripper = "closed on nothing"
    elif opening > OPEN_ENOUGH:
        gripper = "open"
    else:
        gripper = "part-closed"
    block = world.blocks[block_name]
    position = np.array(block.position)
    moved = float(np.linalg.norm(position[:2] - np.array(block.initial_position[:2])))
    others_moved = max(
        (
            float(np.linalg.norm(np.array(b.position[:2]) - np.array(b.initial_position[:2])))
            for c, b in world.blocks.items()
            if c != block_name
        ),
        default=0.0,
    )
    offset = position - grasp_point
    extra = {}
    if env.task.family is TaskFamily.PUSH:
        along, across = push_displacement(world, block_name, env.task.slots["direction"])
        extra = {"push_along_m": round(along, 3), "push_across_m": round(across, 3)}
    return {
        "gripper": gripper,
        "opening": round(opening, 4),
        "regrasp": bool(expert._regrasp),  # the expert's only memory (read for the report)
        "block_moved_m": round(moved, 3),
        "block_raised_m": round(float(position[2] - world.rest_z()), 3),
        "block_tilt_deg": round(tilt_deg(block.orientation), 1),
        "others_moved_m": round(others_moved, 3),
        "ee_to_block_xy_m": round(float(np.linalg.norm(offset[:2])), 3),
        "ee_above_block_m": round(float(-offset[2]), 3),
        "in_world_held": sorted(world.held),
        **extra,
    }


def run_episode(
    env: Any,
    expert: ScriptedExpert,
    kinematics: PandaKinematics,
    driver: Any,
    seed: int,
    handover: int,
    memory: str,
) -> dict[str, Any]:
    obs, info = env.reset(seed=seed)
    expert.reset(env.task)
    driver.reset(seed)
    step, state = 0, None
    labels = {"driver_steps": 0, "regrasp_flag": 0, "differs_from_memoryless": 0}
    while True:
        if step == handover:
            state = describe(env, kinematics, expert)
            if memory == "fresh":
                expert.reset()
        label = None
        if step >= handover or memory == "continuous" or driver.needs_label:
            joints, world = env.scene.joint_positions(), env.scene.world_state()
            flag_before, yaw_before = expert._regrasp, expert._last_yaw
            label = expert.act(joints, world)
            if step < handover:
                # The DAgger label of a driver's state: does it depend on the expert's history (the flag)?
                labels["driver_steps"] += 1
                if flag_before or expert._regrasp:
                    labels["regrasp_flag"] += 1
                    memoryless = ScriptedExpert(env.task, kinematics, expert.config)
                    memoryless._last_yaw = yaw_before
                    other = memoryless.act(joints, world)
                    labels["differs_from_memoryless"] += int(np.max(np.abs(other - label)) > 1e-4)
        action = label if step >= handover else driver.act(obs, info, label)
        obs, _, terminated, truncated, info = env.step(np.asarray(action, np.float32))
        step += 1
        if terminated or truncated:
            break
    success = bool(info["success"])
    record: dict[str, Any] = {
        "seed": seed,
        "k": handover,
        "done_before_handover": state is None,
        "success": success,
        "steps_after_handover": step - handover if success and state is not None else None,
        "handover": state,
        "labels": labels,
    }
    if not success:
        record["end"] = describe(env, kinematics, expert)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--driver", default="noise:0.05", help="policy:<checkpoint dir> or noise:<sigma>")
    parser.add_argument(
        "--families",
        nargs="+",
        default=["pick", "push", "place", "stack"],
        choices=[f.value for f in FAMILIES],
    )
    parser.add_argument("--quick", action="store_true", help="5 seeds per family")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per family (default 20)")
    parser.add_argument("--seed", type=int, default=5000, help="first seed; episode i uses seed + i")
    parser.add_argument("--handover", type=int, nargs="+", default=[0, 10, 20, 40], help="hand-over steps")
    parser.add_argument("--memory", default="continuous", choices=("continuous", "fresh"))
    parser.add_argument("--execute-steps", type=int, default=5, help="policy: actions executed per chunk")
    parser.add_argument("--split", default="train", choices=("train", "heldout"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = args.seeds or (5 if args.quick else 20)
    kind, _, value = args.driver.partition(":")
    if kind == "policy" and value:
        driver: Any = PolicyDriver(value, args.execute_steps)
    elif kind == "noise" and value:
        driver = NoiseDriver(float(value))
    else:
        parser.error("--driver is policy:<checkpoint dir> or noise:<sigma>")
    handovers = sorted(set(args.handover))
    if 0 not in handovers:
        handovers = [0, *handovers]

    kinematics = PandaKinematics()
    records: dict[str, list[dict[str, Any]]] = {}
    started = time.monotonic()
    for family in args.families:
        env = make_env(
            family,
            cameras=driver.cameras,
            image_size=driver.image_size,
            control_hz=driver.fps,
            split=args.split,
        )
        env.reset(seed=args.seed)
        expert = ScriptedExpert(env.task, kinematics, ExpertConfig(control_hz=driver.fps))
        records[family] = []
        for k in handovers:
            for i in range(seeds):
                records[family].append(
                    run_episode(env, expert, kinematics, driver, args.seed + i, k, args.memory)
                )
        env.close()
    wall = time.monotonic() - started
    kinematics.close()

    rows: dict[str, dict[str, Any]] = {}
    print(f"driver {args.driver}, expert memory {args.memory}, seeds {args.seed}..{args.seed + seeds - 1}")
    print(
        f"{'family':<7} {'k':>3} {'episodes':>8} {'done<k':>6} {'expert':>7} {'success':>8} {'vs k=0':>7}"
        f" {'steps':>6}"
    )
    for family, recs in records.items():
        rows[family] = {}
        base = None
        for k in handovers:
            rs = [r for r in recs if r["k"] == k]
            evaluated = [r for r in rs if not r["done_before_handover"]]
            wins = [r for r in evaluated if r["success"]]
            rate = len(wins) / len(evaluated) if evaluated else None
            if k == 0:
                base = rate
            steps = [r["steps_after_handover"] for r in wins]
            row = {
                "episodes": len(rs),
                "done_before_handover": len(rs) - len(evaluated),
                "evaluated": len(evaluated),
                "expert_successes": len(wins),
                "expert_success_rate": rate,
                "mean_steps_after_handover": float(np.mean(steps)) if steps else None,
            }
            rows[family][str(k)] = row
            delta = "" if k == 0 or rate is None or base is None else f"{rate - base:+.0%}"
            print(
                f"{family:<7} {k:>3} {len(rs):>8} {row['done_before_handover']:>6} {len(evaluated):>7}"
                f" {'-' if rate is None else f'{rate:.0%}':>8} {delta:>7}"
                f" {'-' if not steps else f'{np.mean(steps):.0f}':>6}"
            )

    # The state at hand-over (k > 0): expert success within each gripper category.
    print("\nstate at hand-over (k > 0): expert successes / episodes")
    by_state: dict[str, dict[str, list[int]]] = {}
    for family, recs in records.items():
        table: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for r in recs:
            if r["k"] == 0 or r["done_before_handover"]:
                continue
            h = r["handover"]
            keys = [h["gripper"]]
            if h["regrasp"]:
                keys.append("re-grasp flag set")
            if h["block_tilt_deg"] > 15:
                keys.append("block tilted >15deg")
            if h["block_moved_m"] > 0.01 and family != "push":
                keys.append("block moved >1cm")
            for key in keys:
                table[key][0] += int(r["success"])
                table[key][1] += 1
        by_state[family] = dict(table)
        cells = ", ".join(f"{key} {s}/{n}" for key, (s, n) in sorted(table.items()))
        print(f"{family:<7} {cells}")

    # History dependence of the DAgger labels on the driver's states (the k = max episodes contain the
    # shorter driver phases as prefixes for a deterministic driver).
    longest = max(handovers)
    print(f"\nlabels on the driver's states (k={longest} episodes, memory {args.memory}):")
    label_stats: dict[str, dict[str, int]] = {}
    for family, recs in records.items():
        total: dict[str, int] = defaultdict(int)
        for r in recs:
            if r["k"] == longest:
                for key, n in r["labels"].items():
                    total[key] += n
        label_stats[family] = dict(total)
        print(
            f"{family:<7} {total['driver_steps']} states, re-grasp flag set on {total['regrasp_flag']},"
            f" label differs from a memoryless expert's on {total['differs_from_memoryless']}"
        )

    failures = []
    print("\nexpert failures: state at hand-over -> state at the end of the episode")
    for family, recs in records.items():
        for r in recs:
            if r["done_before_handover"] or r["success"]:
                continue
            h, e = r["handover"] or {}, r["end"]
            failures.append({"family": family, **{x: r[x] for x in ("seed", "k", "handover", "end")}})
            print(
                f"{family:<7} seed {r['seed']} k={r['k']:<3} | {h.get('gripper')} open={h.get('opening')}"
                f" regrasp={h.get('regrasp')} tilt={h.get('block_tilt_deg')} moved={h.get('block_moved_m')}"
                f" | end: {e['gripper']} open={e['opening']} regrasp={e['regrasp']} tilt={e['block_tilt_deg']}"
                f" raised={e['block_raised_m']} ee-block xy={e['ee_to_block_xy_m']} z={e['ee_above_block_m']}"
                + (
                    f" push along={e['push_along_m']} across={e['push_across_m']}"
                    if "push_along_m" in e
                    else ""
                )
            )
    if not failures:
        print("(none)")
    print(f"\n{sum(len(r) for r in records.values())} episodes in {wall:.0f} s")
    print(
        json.dumps(
            {
                "benchmark": "expert_recovery",
                "driver": args.driver,
                "memory": args.memory,
                "seeds": seeds,
                "first_seed": args.seed,
                "handover_steps": handovers,
                "families": rows,
                "handover_states": by_state,
                "driver_labels": label_stats,
                "failures": failures,
                "wall_s": round(wall, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
