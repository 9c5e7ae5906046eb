"""Where does a policy's own referent estimate miss, and is it the encoders or the instruction?

For unseen scenes of one family (``vla_sim.make_env(family).reset(seed=S)``, the scenes ``vla-eval
--closed-loop --seed`` runs), the localization head's estimate of the target block at the first frame, asked
two ways:

- ``own``: the episode's instruction, what the policy reads;
- ``pick?``: a pick question naming the same block ("pick up the orange block"), the instruction under which
  the encoders learned to find blocks (the colour comes from ``vla_sim.tasks.parse_instruction``: the
  simulator's privilege, used only to ask).

Where ``own`` misses and ``pick?`` finds the block, the instruction's conditioning is at fault; where both
miss, the encoders do not see the block. The table splits the scenes by where the block sits across the
table (|y| > 0.22 m is the workspace's outer 6 cm each side, near the front camera's left and right edges).

Measured on the shipped checkpoint (stage 13), seeds 2000-2049: on push ``own`` misses by more than 3 cm in 5
scenes, all 5 of them push failures, which succeed when the policy reads the simulator's referents instead
(``vla-eval --referents truth``). Four are blocks at the table's right edge (y from -0.237 to -0.249 m: orange,
yellow, purple) and ``pick?`` misses them too: the encoders do not see those blocks (edge scenes: own 3.9 cm,
inner ones 0.69 cm). The fifth (green, y = -0.13) is found under ``pick?`` (1.0 cm): the push instruction's
conditioning. Pick misses 2 scenes, place none; at their right edge these seeds put blue and purple blocks,
never orange or yellow beyond y = -0.245.

A checkpoint with the held pathway adds a third column, ``held``: the held look's target (the answer the held
actor acts on; ``vla-train-held --look-epochs`` tunes a copy of the encoders for it). On the shipped checkpoint
(stage 15), push, the same seeds: held 0.31 cm on all 50 scenes (largest 0.79), 0.40 cm on the 18 edge
scenes, where ``own`` and ``pick?``, stage 13's encoders as above, miss 4 of them by 10-22 cm.

Usage: python bench/first_frame_referents.py CHECKPOINT --family push [--seed 2000] [--episodes 50]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from vla_policy.models.policy import load_policy
from vla_sim.tasks import parse_instruction

import vla_sim

EDGE_Y = 0.22  # m: blocks spawn with |y| <= 0.25
MISS_CM = 3.0


def target_estimate(policy, observation: dict, instruction: str) -> np.ndarray:
    """The localization head's target xy (m) for this observation, read under ``instruction``."""
    network = policy.network
    images, text, state = policy.prepare({**observation, "task": instruction})
    with torch.inference_mode():
        estimate = network(images, text, state)["environment_state"][0]
    return (estimate * network.environment_std + network.environment_mean)[:2].numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--family", default="push", choices=["pick", "place", "push", "stack"])
    parser.add_argument("--split", default="train", choices=["train", "heldout"])
    parser.add_argument("--seed", type=int, default=2000, help="first scene seed (unseen: 2000)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = load_policy(args.checkpoint)
    if not policy.config.localization_dim:
        raise SystemExit(f"{args.checkpoint} has no localization head")
    env = vla_sim.make_env(
        args.family, seed=args.seed, cameras=policy.config.camera_names,
        image_size=(policy.config.image_height, policy.config.image_width), control_hz=policy.manifest.fps,
        split=args.split,
    )  # fmt: skip
    held = policy.config.held_referents
    started = time.monotonic()
    rows = []
    print(
        f"{'seed':>5s} {'block':>7s} {'x':>6s} {'y':>6s} {'own cm':>7s} {'pick? cm':>8s} {'held cm':>7s}  instruction"
    )
    for seed in range(args.seed, args.seed + args.episodes):
        observation, info = env.reset(seed=seed)
        colour = parse_instruction(info["task"]).slots["block"]
        truth = np.asarray(env.scene.world_state().blocks[colour].position[:2])
        own, asked = (
            100 * float(np.linalg.norm(target_estimate(policy, observation, q) - truth))
            for q in (info["task"], f"pick up the {colour} block")
        )
        look = float("nan")
        if held:
            images, _, state = policy.prepare({**observation, "task": info["task"]})
            look = 100 * float(
                np.linalg.norm(policy.perceive(images, info["task"], state)[0][0, :2].numpy() - truth)
            )
        rows.append(
            {"seed": seed, "x": float(truth[0]), "y": float(truth[1]), "own_cm": own, "pick_cm": asked,
             "held_cm": look}
        )  # fmt: skip
        flag = "  <-" if own > MISS_CM else ""
        print(
            f"{seed:5d} {colour:>7s} {truth[0]:6.3f} {truth[1]:6.3f} {own:7.1f} {asked:8.1f} {look:7.1f}  "
            f"{info['task']}{flag}"
        )
    env.close()
    figures = {}
    for name, keep in (("all", lambda r: True), ("edge", lambda r: abs(r["y"]) > EDGE_Y),
                       ("inner", lambda r: abs(r["y"]) <= EDGE_Y)):  # fmt: skip
        part = [r for r in rows if keep(r)]
        if not part:
            continue
        figures[name] = {
            "scenes": len(part),
            "own_cm": float(np.mean([r["own_cm"] for r in part])),
            "pick_cm": float(np.mean([r["pick_cm"] for r in part])),
            "held_cm": float(np.mean([r["held_cm"] for r in part])),
            "held_max_cm": float(np.max([r["held_cm"] for r in part])),
            "own_misses": [r["seed"] for r in part if r["own_cm"] > MISS_CM],
            "pick_misses": [r["seed"] for r in part if r["pick_cm"] > MISS_CM],
        }
        f = figures[name]
        print(f"{name:6s} {f['scenes']:3d} scenes: own {f['own_cm']:.2f} cm ({len(f['own_misses'])} over "
              f"{MISS_CM:g} cm), pick? {f['pick_cm']:.2f} cm ({len(f['pick_misses'])} over), held "
              f"{f['held_cm']:.2f} cm (largest {f['held_max_cm']:.2f})")  # fmt: skip
    print(json.dumps({"checkpoint": args.checkpoint, "family": args.family, "split": args.split,
                      "seed": args.seed, "seconds": time.monotonic() - started, **figures}))  # fmt: skip


if __name__ == "__main__":
    main()
