"""Is a family's failure perception or control? A state-based chunk policy given the simulator's referents.

An MLP reads the joint state and ``observation.environment_state`` (the instruction's referents: target xyz,
goal xyz) instead of images, is trained on the same demonstrations as the native VLA (a chunk of H absolute
joint targets, L1), and drives the embedded simulator through the node's executor (``ChunkDriver``, re-planning
after 5 actions) on unseen seeds. With exact referents it measures control alone; ``--bias-cm`` (one offset
per episode) and ``--jitter-cm`` (new at every inference) make the referents as wrong as a vision estimate
is, which says how precise the image pathway must be.

Measured on place (200 demonstrations with ``--settle-steps 5``, seeds 1000-1019, 60 epochs, about a minute of
training on one thread): exact 20/20; 2 cm bias 15-16/20 (16-17 grasped, two runs); the image-only VLA grasped 16/20 and placed
1/20. That is why the native VLA has a referent pathway (``--model referent_input=true``).

On stack (the 750 demonstrations of seeds 0-749, ``vla-dagger expert --settle-steps 5``; scene seeds
2000-2019; 60 epochs, 2-8 min on one shared thread): exact referents 20/20 (grasped 20), 1 cm bias 14/20;
``--held``, the first frame's referents throughout (the block's start, not where it is carried): 18/20, 0.5 cm
bias 19/20, 1 cm bias 13/20. Stack's control is learnable from these demonstrations; what it needs is the
block and the base, each to about half a centimetre, once, at the start. ``--held`` on place (400
demonstrations, ``place_0`` and ``place_200``): 20/20 exact and 20/20 with 1 cm bias; on push (900, ``push_0``
and ``push_200``): 20/20 and 16/20.

Usage: python bench/referent_oracle.py DATASET [DATASET ...] [--family place] [--episodes 20] [--bias-cm 0 2]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from torch import nn
from vla_collector.lerobot import LeRobotV3Dataset
from vla_common.features import ENVIRONMENT_STATE_KEY, STATE_KEY
from vla_common.policy import ActionChunk
from vla_policy.rollout import ChunkDriver, refill_for_execute_steps

HORIZON = 10
DT = 0.1


def chunk_samples(roots: list[str], held: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(state + referents [N, S + E], the next HORIZON actions [N, HORIZON * A]) for every frame; ``held``:
    every frame reads its episode's first referents."""
    inputs, targets = [], []
    for root in roots:
        ds = LeRobotV3Dataset(root)
        for e in range(len(ds.episodes)):
            ep = ds.episode(e)
            if ep.environment_state is None:
                raise SystemExit(f"{root} has no {ENVIRONMENT_STATE_KEY}: record it with vla-dagger expert")
            n = len(ep)
            for t in range(n):
                ahead = np.minimum(np.arange(t, t + HORIZON), n - 1)  # the last action repeats past the end
                inputs.append(np.concatenate([ep.state[t], ep.environment_state[0 if held else t]]))
                targets.append(ep.action[ahead].reshape(-1))
    return np.asarray(inputs, np.float32), np.asarray(targets, np.float32)


class StatePolicy:
    """The ``Policy`` protocol over an MLP on (state, referents), with the referents perturbed as asked."""

    def __init__(self, x: np.ndarray, y: np.ndarray, epochs: int, seed: int, held: bool = False) -> None:
        torch.manual_seed(seed)
        self.held = held  # read the episode's first referents throughout
        self.first: np.ndarray | None = None
        self.x_mean, self.x_std = x.mean(0), x.std(0) + 1e-6
        self.y_mean, self.y_std = y.mean(0), y.std(0) + 1e-6
        self.action_dim = y.shape[1] // HORIZON
        self.net = nn.Sequential(
            nn.Linear(x.shape[1], 512), nn.GELU(), nn.Linear(512, 512), nn.GELU(), nn.Linear(512, 512),
            nn.GELU(), nn.Linear(512, y.shape[1]),
        )  # fmt: skip
        xs = torch.from_numpy((x - self.x_mean) / self.x_std)
        ys = torch.from_numpy((y - self.y_mean) / self.y_std)
        steps = epochs * max(len(xs) // 256, 1)
        optimizer = torch.optim.AdamW(self.net.parameters(), 1e-3, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for _ in range(steps):
            batch = torch.randint(0, len(xs), (256,))
            loss = (self.net(xs[batch]) - ys[batch]).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        self.net.eval()
        self.names = tuple(f"a{i}" for i in range(self.action_dim))
        self.bias_m = self.jitter_m = 0.0
        self.rng = np.random.default_rng(seed)
        self.offset = np.zeros(6)

    def reset(self) -> None:
        # One xy offset per referent for the episode, of RMS length bias_m.
        self.offset = np.zeros(6)
        self.offset[[0, 1, 3, 4]] = self.rng.normal(0.0, self.bias_m / math.sqrt(2), 4)
        self.first = None

    def infer(self, observation) -> ActionChunk:
        if self.first is None or not self.held:
            self.first = np.asarray(observation[ENVIRONMENT_STATE_KEY], dtype=np.float64)
        referents = self.first + self.offset
        referents = referents + self.rng.normal(0.0, self.jitter_m / math.sqrt(3), 6)
        x = np.concatenate([observation[STATE_KEY], referents]).astype(np.float32)
        with torch.no_grad():
            y = self.net(torch.from_numpy((x - self.x_mean) / self.x_std)[None])[0].numpy()
        actions = (y * self.y_std + self.y_mean).reshape(HORIZON, self.action_dim)
        return ActionChunk(actions=actions, names=self.names, stamp=observation["timestamp"], dt=DT)


def run_episode(env, driver: ChunkDriver, seed: int, prepare=None) -> tuple[bool, bool]:
    """One closed-loop episode of scene ``seed`` -> (succeeded, grasped the target); ``prepare(observation,
    info)`` runs after the reset, before the first action (e.g. to hand the policy its held referents)."""
    obs, info = env.reset(seed=seed)
    driver.reset()
    if prepare is not None:
        prepare(obs, info)
    done, success, grasped = False, False, False
    while not done:
        action = driver.act({**obs, "task": info["task"]}, info["sim_time"])
        obs, _, terminated, truncated, info = env.step(action.astype(np.float32))
        success = success or bool(info["success"])
        grasped = grasped or bool(info["target_held"])
        done = terminated or truncated
    return success, grasped


def closed_loop(policy: StatePolicy, family: str, episodes: int, seed: int) -> dict[str, float]:
    import vla_sim

    env = vla_sim.make_env(family, seed=seed, cameras=("front",), image_size=(32, 32), control_hz=1 / DT)
    driver = ChunkDriver(policy, policy.names, refill_below_s=refill_for_execute_steps(5, HORIZON, DT))
    wins = grasps = 0
    try:
        for i in range(episodes):
            success, grasped = run_episode(env, driver, seed + i)
            wins += success
            grasps += grasped
    finally:
        env.close()
    return {"success": wins, "grasped": grasps, "episodes": episodes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("datasets", nargs="+", help="datasets recorded with observation.environment_state")
    p.add_argument("--family", default="place")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=1000, help="first unseen scene seed")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--bias-cm", type=float, nargs="+", default=[0.0, 2.0])
    p.add_argument("--jitter-cm", type=float, default=0.0)
    p.add_argument("--held", action="store_true", help="train and run on each episode's first referents")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    x, y = chunk_samples(a.datasets, a.held)
    policy = StatePolicy(x, y, a.epochs, seed=0, held=a.held)
    train_s = time.perf_counter() - t0
    print(f"{len(x)} frames, trained in {train_s:.0f} s")
    print(f"| {a.family}, seeds {a.seed}-{a.seed + a.episodes - 1} | success | grasped |\n|---|---|---|")
    rows = []
    for bias in a.bias_cm:
        policy.bias_m, policy.jitter_m = bias / 100, a.jitter_cm / 100
        r = closed_loop(policy, a.family, a.episodes, a.seed)
        rows.append({"bias_cm": bias, "jitter_cm": a.jitter_cm, **r})
        print(f"| {'held ' if a.held else ''}referents, {bias:g} cm bias, {a.jitter_cm:g} cm jitter | {r['success']}/{a.episodes} "
              f"| {r['grasped']}/{a.episodes} |")  # fmt: skip
    print(
        json.dumps(
            {"family": a.family, "held": a.held, "frames": len(x), "train_s": round(train_s, 1), "rows": rows}
        )
    )


if __name__ == "__main__":
    main()
