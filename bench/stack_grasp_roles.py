"""Which block does a policy take in stack, and where does it leave it? Closed loop in the embedded simulator.

For each episode: the roles of the blocks it held at some step (``block``: the one the instruction says to
move, ``BASE``: the one to stack it on, ``other``; none: it grasped nothing), and at the end the block's xy
distance from the base and its height above it. With ``--referents truth`` the policy reads the simulator's
referents instead of its estimate (the oracle that says what the estimate costs).

Measured (``outputs/s14/fz_all5/best``, the stage-13 heads fit again with 1,050 stack demonstrations, true
goal, seeds 2000-2011): it never took the base; in 7 of 12 it took nothing, and 3 of the 5 it took the right
block were left 7-21 cm from the base; 2 stacked.

Usage: python bench/stack_grasp_roles.py CHECKPOINT [--episodes 12] [--seed 2000] [--referents estimate|truth]
The last line of output is one JSON object with the tally.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import torch
from vla_policy.rollout import ChunkDriver, refill_for_execute_steps

import vla_sim
from vla_policy import load_policy

EXECUTE_STEPS = 5  # vla-eval's default re-planning


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--referents", choices=("estimate", "truth"), default="estimate")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = load_policy(args.checkpoint, referents=args.referents)
    refill = refill_for_execute_steps(EXECUTE_STEPS, policy.horizon, policy.dt)
    driver = ChunkDriver(policy, policy.manifest.action_names, refill_below_s=refill)
    env = vla_sim.make_env(
        "stack", seed=args.seed, cameras=policy.config.camera_names,
        image_size=(policy.config.image_height, policy.config.image_width), control_hz=policy.manifest.fps,
    )  # fmt: skip
    tally: Counter[str] = Counter()
    successes = 0
    try:
        for i in range(args.episodes):
            obs, info = env.reset(seed=args.seed + i)
            driver.reset()
            slots = env.unwrapped.task.slots
            held: list[str] = []
            done, success = False, False
            while not done:
                action = driver.act({**obs, "task": info["task"]}, info["sim_time"])
                obs, _, terminated, truncated, info = env.step(action.astype(np.float32))
                success = success or bool(info["success"])
                held += [c for c in env.unwrapped.scene.held_blocks() if c not in held]
                done = terminated or truncated
            world = env.unwrapped.scene.world_state()
            block = np.array(world.blocks[slots["block"]].position)
            base = np.array(world.blocks[slots["base"]].position)
            roles = [{slots["block"]: "block", slots["base"]: "BASE"}.get(c, "other") for c in held]
            tally[" then ".join(roles) or "nothing"] += 1
            successes += success
            print(
                f"seed {args.seed + i} {info['task']!r}: success={success} held={roles or 'nothing'}; block-base "
                f"xy {100 * np.linalg.norm(block[:2] - base[:2]):.1f} cm, dz {100 * (block[2] - base[2]):.1f} cm",
                flush=True,
            )
    finally:
        env.close()
    print(json.dumps({"episodes": args.episodes, "successes": successes, "held": dict(tally)}))


if __name__ == "__main__":
    main()
