"""Can a checkpoint's keypoint encoders find stack's base block, and when? Ridge read-outs of the keypoints.

Per frame of two stack datasets (fit on the first, scored on the second), the encoders are given three
questions and a ridge read-out of their keypoints is fitted to the block's and the base's table xy
(``observation.environment_state``):

- ``own``: the episode's instruction ("put the red block on the blue block"), what the policy reads;
- ``base?``: a pick question about the base's colour ("pick up the blue block");
- ``block?``: the same about the moved block's colour.

The colours come from the instruction (``vla_sim.tasks.parse_instruction``); the simulator's privilege, used
only to ask. Scored at the first frame (the scene before the arm moves) and over every 4th frame of the whole
episode (the carried block in view).

Measured on the shipped checkpoint (fit on ``vla-dagger expert --families stack`` seeds 0-149, scored on seeds
2000-2029): at the first frame ``base?`` finds the base to 3.1 cm (R² 0.95) and ``block?`` the block to 1.3 cm,
while ``own`` finds neither well (block 12 cm); over whole episodes ``base?`` finds the base only to 13 cm (R²
0.17) and tracks the carried block instead (R² 0.83). The encoders can find a named block; what they do not
do is keep looking at the base once a block is in the gripper.

Usage: python bench/stack_base_probe.py CHECKPOINT FIT_DATASET TEST_DATASET [--threads N]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from vla_policy.data import open_datasets
from vla_policy.evaluate import _episode_inputs, explained_variance, ridge_readout
from vla_policy.models.encoders import InstructionEncoder
from vla_policy.models.policy import load_policy
from vla_sim.tasks import parse_instruction

STRIDE = 4
RIDGE = 1e-2  # penalty per fitted row: ~150 first frames against 128 keypoint coordinates
QUESTIONS = ("own", "base?", "block?")
REFERENTS = {"block": slice(0, 2), "base": slice(3, 5)}  # environment_state: target xyz, goal xyz


def keypoint_rows(policy, root: str, first_frame_only: bool) -> dict[str, np.ndarray]:
    """Per question its keypoints [N, F], and per referent its xy [N, 2], over the dataset's frames."""
    (dataset,), _ = open_datasets([root])
    head, instructions = policy.network.head, InstructionEncoder(policy.config)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in (*QUESTIONS, *REFERENTS)}
    for e in range(dataset.num_episodes):
        episode = dataset.episode(e)
        if episode.environment_state is None:
            raise SystemExit(f"{root} episode {e} has no observation.environment_state")
        task = parse_instruction(episode.tasks[0])
        if "base" not in task.slots:
            raise SystemExit(f"{root} episode {e} is not a stack episode: {episode.tasks[0]!r}")
        images, text, _ = _episode_inputs(policy, dataset, e, episode)
        frames = torch.arange(0, 1 if first_frame_only else len(episode), STRIDE)
        questions = instructions([f"pick up the {task.slots[s]} block" for s in ("base", "block")])
        texts = {
            "own": text[frames],
            "base?": questions[0:1].repeat(len(frames), 1),
            "block?": questions[1:2].repeat(len(frames), 1),
        }
        with torch.inference_mode():
            for question, asked in texts.items():
                rows[question].append(head.encode_keypoints(images[frames], asked).double().numpy())
        for referent, columns in REFERENTS.items():
            rows[referent].append(episode.environment_state[frames.numpy()][:, columns].astype(np.float64))
    return {k: np.concatenate(v) for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("fit_dataset")
    parser.add_argument("test_dataset")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = load_policy(args.checkpoint)
    started = time.monotonic()
    figures: dict[str, dict[str, dict[str, float]]] = {}
    print(f"{'frames':12s} {'question':8s} {'referent':8s} {'cm':>6s} {'R²':>6s}")
    for frames, first in (("first", True), ("whole", False)):
        fit = keypoint_rows(policy, args.fit_dataset, first)
        test = keypoint_rows(policy, args.test_dataset, first)
        for question in QUESTIONS:
            for referent in REFERENTS:
                predicted = ridge_readout(fit[question], fit[referent], test[question], ridge=RIDGE)
                truth = test[referent]
                cm = 100 * float(np.linalg.norm(predicted - truth, axis=1).mean())
                r2 = explained_variance(truth, predicted)
                figures.setdefault(frames, {}).setdefault(question, {})[referent] = {"cm": cm, "r2": r2}
                print(f"{frames:12s} {question:8s} {referent:8s} {cm:6.1f} {r2:6.2f}")
    print(json.dumps({"checkpoint": args.checkpoint, "seconds": time.monotonic() - started, **figures}))


if __name__ == "__main__":
    main()
