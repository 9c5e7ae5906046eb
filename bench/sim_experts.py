"""Scripted-expert success per task family over randomized episodes (the >= 95% target of issue 3).

    python bench/sim_experts.py            # 100 episodes per family
    python bench/sim_experts.py --quick    # 10 per family
Runs the Gymnasium env without cameras (the experts read the sim state), 240 Hz physics, 10 Hz control.
Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from vla_sim.env import make_env
from vla_sim.experts import make_expert
from vla_sim.tasks import FAMILIES


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 episodes per family")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per family (default 100)")
    parser.add_argument("--split", default="train", choices=("train", "heldout"))
    parser.add_argument("--seed", type=int, default=0, help="first seed; episode i uses seed + i")
    args = parser.parse_args()
    episodes = args.episodes or (10 if args.quick else 100)
    rows = {}
    for family in FAMILIES:
        env = make_env(family.value, cameras=(), split=args.split)
        expert = make_expert(env)
        successes, steps, sim_s = 0, [], 0.0
        started = time.monotonic()
        for episode in range(episodes):
            env.reset(seed=args.seed + episode)
            while True:
                _, _, terminated, truncated, info = env.step(expert.act_env())
                if terminated or truncated:
                    break
            successes += bool(info["success"])
            if info["success"]:
                steps.append(info["step"])
            sim_s += info["sim_time"]
        wall = time.monotonic() - started
        rows[family.value] = {
            "episodes": episodes,
            "success_rate": successes / episodes,
            "mean_steps_to_success": float(np.mean(steps)) if steps else None,
            "wall_s_per_episode": wall / episodes,
            "real_time_factor": sim_s / wall,
        }
        expert.close()
        env.close()
    print(f"{'family':<10} {'episodes':>8} {'success':>8} {'steps':>6} {'s/ep':>6} {'x real time':>11}")
    for name, row in rows.items():
        mean = row["mean_steps_to_success"]
        print(
            f"{name:<10} {row['episodes']:>8} {row['success_rate']:>8.1%} {mean if mean is None else round(mean):>6}"
            f" {row['wall_s_per_episode']:>6.2f} {row['real_time_factor']:>11.1f}"
        )
    worst = min(row["success_rate"] for row in rows.values())
    print(
        json.dumps(
            {"benchmark": "sim_experts", "split": args.split, "families": rows, "min_success_rate": worst}
        )
    )


if __name__ == "__main__":
    main()
