"""Does a located block help stack's grasp? A block locator, then closed loop with both locators' estimates.

A head trained with ``referent_slots=all`` reads where the block to move is as well as the goal; fed the
simulator's truth it grasps 14 of 20 stack episodes against 9 for a goal-only head (the README's status). This
asks whether an estimate of the block does as well: it trains a :class:`vla_policy.models.networks.GoalLocator`
(the goal locator's design) on the *target* half of ``observation.environment_state`` of stack datasets (a
seeded tenth of the episodes held out, 6 frames per episode), then runs HEAD closed loop on stack, its
referent pathway fed the block locator's target and LOCATED's goal locator's goal at every re-plan (through
the truth pathway, ``referents=truth``).

Measured (stack seeds 0-1049, 20 epochs, 11 min on two threads; HEAD ``outputs/s14/fz_all5_slots_all/best``,
LOCATED ``outputs/s14/loc13``; seeds 2000-2029): the block 2.4 cm off on held-out frames, 2.9 cm at the first
frame; closed loop 1/30 seen and 2/30 held-out, grasped 10/30 each, no better than the goal locator alone.

Usage: python bench/stack_block_locator.py HEAD LOCATED STACK_DATASET[,STACK_DATASET...] [--epochs 20]
    [--episodes 30] [--seed 2000] [--splits train,heldout] [--threads 2]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from vla_common.features import ENVIRONMENT_STATE_KEY
from vla_perception.preprocess import preprocess
from vla_policy.data import open_datasets, split_episodes
from vla_policy.evaluate import closed_loop as vla_closed_loop
from vla_policy.locator import _errors_cm, fit_locator, load_frames, token_rows
from vla_policy.models import load_checkpoint
from vla_policy.models.encoders import InstructionEncoder
from vla_policy.models.networks import GoalLocator

from vla_policy import load_policy

FRAMES_PER_EPISODE = 6
EXECUTE_STEPS = 5  # vla-eval's default re-planning


def train_block_locator(roots: list[str], network, epochs: int) -> tuple[GoalLocator, float, int]:
    """The block locator, its held-out error (cm) and its training frames: vla-train-locator's frames and fit,
    on environment_state's target half."""
    datasets, _ = open_datasets(roots)
    train_refs, val_refs = split_episodes(datasets, 0.1, 0)
    load = dict(per_episode=FRAMES_PER_EPISODE, progress=False, target=True)
    images, sentences, blocks, _ = load_frames(datasets, train_refs, "front", network, **load)
    val_images, val_sentences, val_blocks, _ = load_frames(datasets, val_refs, "front", network, **load)
    tokens, mask, (which, val_which) = token_rows(
        InstructionEncoder(network.config), sentences, val_sentences
    )
    torch.manual_seed(0)
    locator = GoalLocator(network.config)
    locator.goal_mean.copy_(torch.from_numpy(blocks.mean(axis=0)))
    locator.goal_std.copy_(torch.from_numpy(np.maximum(blocks.std(axis=0), 1e-3)))
    target = (torch.from_numpy(blocks) - locator.goal_mean) / locator.goal_std
    fit_locator(
        locator, images, target, tokens, mask, which=which, epochs=epochs, batch_size=64, lr=1e-3, shift=4
    )
    errors = _errors_cm(locator, val_images, tokens, mask, which=val_which, goals=val_blocks)
    return locator, float(errors.mean()), len(images)


def closed_loop(
    head: str,
    goal_locator,
    block_locator,
    encoder: InstructionEncoder,
    *,
    split: str,
    episodes: int,
    seed: int,
) -> dict[str, int]:
    policy = load_policy(head, referents="truth")
    spec = policy.config.input_spec(training=False)

    class Located:  # the policy, with both locators' estimates as its observation's referents
        def __getattr__(self, name):
            return getattr(policy, name)

        def infer(self, observation):
            frame = preprocess(np.asarray(observation["observation.images.front"]), spec)
            image = torch.from_numpy(frame)[None]
            tokens, mask = encoder.token_batch([policy.grounded_instruction(observation["task"])])
            with torch.inference_mode():
                block, goal = block_locator(image, tokens, mask), goal_locator(image, tokens, mask)
            estimate = torch.cat([block, goal], dim=-1)[0].numpy()
            return policy.infer({**observation, ENVIRONMENT_STATE_KEY: estimate})

    outcomes = vla_closed_loop(
        Located(), "located", families=["stack"], splits=[split], episodes=episodes, seed=seed,
        execute_steps=EXECUTE_STEPS, progress=False,
    )  # fmt: skip
    successes = sum(o.success for o in outcomes)
    grasps = sum(o.grasped for o in outcomes)
    return {"episodes": episodes, "successes": successes, "grasped": grasps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("head", help="a checkpoint trained with referent_slots=all")
    parser.add_argument("located", help="a checkpoint with a goal locator (vla-train-locator)")
    parser.add_argument("datasets", help="comma-separated stack dataset roots")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--seed", type=int, default=2000)
    parser.add_argument("--splits", default="train,heldout")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    located = load_checkpoint(args.located)
    if located.network.locator is None:
        raise SystemExit(f"{args.located} has no goal locator (vla-train-locator)")
    started = time.monotonic()
    block_locator, block_cm, frames = train_block_locator(
        args.datasets.split(","), located.network, args.epochs
    )
    encoder = InstructionEncoder(
        located.config
    )  # the head's too: every checkpoint here reads all-MiniLM-L6-v2
    print(f"block locator: {frames} frames, {args.epochs} epochs, {time.monotonic() - started:.0f} s; "
          f"held-out error {block_cm:.2f} cm")  # fmt: skip
    torch.set_num_threads(1)
    figures = {"block_cm": block_cm}
    for split in args.splits.split(","):
        figures[split] = closed_loop(
            args.head, located.network.locator.eval(), block_locator, encoder,
            split=split, episodes=args.episodes, seed=args.seed,
        )  # fmt: skip
        print(f"stack {split}: {figures[split]}", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
