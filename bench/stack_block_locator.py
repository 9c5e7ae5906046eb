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
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from vla_common.features import ENVIRONMENT_STATE_KEY
from vla_perception.preprocess import preprocess
from vla_policy.data import open_datasets, preprocess_frames, split_episodes
from vla_policy.evaluate import closed_loop as vla_closed_loop
from vla_policy.locator import frame_indices
from vla_policy.models import load_checkpoint
from vla_policy.models.encoders import InstructionEncoder
from vla_policy.models.networks import GoalLocator, random_shift

from vla_policy import load_policy

FRAMES_PER_EPISODE = 6
EXECUTE_STEPS = 5  # vla-eval's default re-planning


def stack_frames(roots: list[str], config) -> tuple[tuple, tuple]:
    """((pixels, sentences, block xyz) of the training episodes, the same of the held-out ones)."""
    datasets, _ = open_datasets(roots)
    train_refs, val_refs = split_episodes(datasets, 0.1, 0)

    def load(refs):
        images, sentences, blocks = [], [], []
        for d, e in refs:
            episode = datasets[d].episode(e)
            at = frame_indices(len(episode), FRAMES_PER_EPISODE)
            frames = datasets[d].frames(e, "front")[at]
            images.append(preprocess_frames(frames, config, augment=False, rng=None))
            sentences += [episode.tasks[t] for t in at]
            blocks.append(episode.environment_state[at, :3].astype(np.float32))
        return torch.from_numpy(np.concatenate(images)), sentences, np.concatenate(blocks)

    return load(train_refs), load(val_refs)


def train_block_locator(
    config, train, val, encoder: InstructionEncoder, epochs: int
) -> tuple[GoalLocator, float]:
    """The locator and its held-out error (cm)."""
    (images, sentences, blocks), (val_images, val_sentences, val_blocks) = train, val
    distinct = sorted(set(sentences) | set(val_sentences))
    tokens, mask = encoder.token_batch(distinct)
    row = {s: i for i, s in enumerate(distinct)}
    which = torch.tensor([row[s] for s in sentences])
    val_which = torch.tensor([row[s] for s in val_sentences])
    torch.manual_seed(0)
    locator = GoalLocator(config)
    locator.goal_mean.copy_(torch.from_numpy(blocks.mean(axis=0)))
    locator.goal_std.copy_(torch.from_numpy(np.maximum(blocks.std(axis=0), 1e-3)))
    target = (torch.from_numpy(blocks) - locator.goal_mean) / locator.goal_std
    optimizer = torch.optim.AdamW(locator.parameters(), lr=1e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(len(images) / 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.05)
    for _ in range(epochs):
        locator.train()
        for chunk in torch.randperm(len(images)).split(64):
            w = which[chunk]
            predicted = locator.normalized(random_shift(images[chunk].float(), 4), tokens[w], mask[w])
            loss = F.smooth_l1_loss(predicted, target[chunk], beta=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    locator.eval()
    with torch.no_grad():
        predicted = locator(val_images, tokens[val_which], mask[val_which]).numpy()
    return locator, 100 * float(np.linalg.norm(predicted - val_blocks, axis=1).mean())


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
    config = located.config
    started = time.monotonic()
    train, val = stack_frames(args.datasets.split(","), config)
    encoder = InstructionEncoder(config)  # the head's too: every checkpoint here reads all-MiniLM-L6-v2
    block_locator, block_cm = train_block_locator(config, train, val, encoder, args.epochs)
    print(f"block locator: {len(train[0])} frames, {args.epochs} epochs, {time.monotonic() - started:.0f} s; "
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
