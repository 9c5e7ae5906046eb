"""``vla-train-locator``: fit a goal locator onto a native VLA checkpoint.

    vla-train-locator CHECKPOINT DATASET [DATASET ...] --output OUT [--epochs 20] [--frames-per-episode 6]

The referent pathway reads where the instruction's goal is (the bowl, the zone, the push point, stack's base
block). Its localization head reads the keypoints of the policy's encoders, whose FiLM conditioning is the
pooled sentence embedding, and that embedding cannot say which of two named blocks is the base: "put the red
block on the blue block" and its swap are 0.995 apart in cosine, and the head misplaces stack's base by 17 cm.
The goal locator (:class:`vla_policy.models.networks.GoalLocator`) reads the instruction's token embeddings
through learned queries instead, and the camera through its own keypoint CNN; it is trained here, apart
from the policy, on the datasets' ``observation.environment_state`` (the simulator's ground truth), and
OUT is CHECKPOINT with it added. The policy's heads are unchanged: they were trained on the true goal, which
the locator now estimates in place of the localization head.

Frames: ``--frames-per-episode`` evenly spaced frames of every episode, the first always among them.
A seeded tenth of the episodes is held out; the per-dataset error on them is printed and kept in OUT's
config (``info["goal_locator"]``).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vla_policy.data import DataError, open_datasets, preprocess_frames, split_episodes
from vla_policy.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from vla_policy.models.config import PolicyKind
from vla_policy.models.encoders import InstructionEncoder
from vla_policy.models.networks import GoalLocator, VLANetwork, random_shift

LOG = logging.getLogger("vla_policy.locator")


def frame_indices(length: int, count: int) -> np.ndarray:
    """``count`` evenly spaced frames of an episode of ``length``, the first always among them."""
    return np.unique(np.linspace(0, length - 1, num=min(count, length)).round().astype(int))


def load_frames(
    datasets,
    refs,
    camera: str,
    network: VLANetwork,
    *,
    per_episode: int,
    progress: bool,
    target: bool = False,
):
    """(pixels [N, 3, H, W] uint8, sentences [N], goals [N, 3] metres, dataset index [N]) of ``refs``;
    ``target``: the target's positions (environment_state's first half) in place of the goal's."""
    half = network.config.localization_dim // 2
    columns = slice(0, half) if target else slice(half, None)
    images, sentences, goals, origin = [], [], [], []
    for d, e in tqdm(refs, desc=f"decode {camera} frames", unit="ep", disable=not progress):
        ds = datasets[d]
        ep = ds.episode(e)
        if ep.environment_state is None:
            raise DataError(f"{ds.root} episode {e} has no observation.environment_state (simulator data)")
        at = frame_indices(len(ep), per_episode)
        frames = ds.frames(e, camera)
        if len(frames) != len(ep):
            raise DataError(f"{ds.root} episode {e}: {len(frames)} {camera} frames for {len(ep)} steps")
        images.append(preprocess_frames(frames[at], network.config, augment=False, rng=None))
        sentences += [ep.tasks[t] for t in at]
        goals.append(ep.environment_state[at, columns].astype(np.float32))
        origin += [d] * len(at)
    return torch.from_numpy(np.concatenate(images)), sentences, np.concatenate(goals), np.array(origin)


def train_locator(
    checkpoint_dir: str,
    dataset_roots: Sequence[str],
    output: str,
    *,
    camera: str = "front",
    epochs: int = 20,
    frames_per_episode: int = 6,
    episodes_per_dataset: int = 0,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    val_fraction: float = 0.1,
    progress: bool = True,
    locator_from: str = "",
) -> dict[str, object]:
    """Train a goal locator on ``dataset_roots`` and write ``checkpoint_dir`` with it to ``output``; returns
    what goes into ``info["goal_locator"]``. ``locator_from``: start from that checkpoint's locator (with
    ``epochs=0``, copy it onto ``checkpoint_dir``'s heads and score it)."""
    start = load_checkpoint(checkpoint_dir)
    cfg = start.config
    if cfg.kind is not PolicyKind.NATIVE_VLA or not (cfg.referent_input and cfg.localization_dim == 6):
        raise ValueError(f"{checkpoint_dir}: a goal locator needs a native VLA with the referent pathway")
    config = cfg.with_updates(locator_camera=camera)
    network = VLANetwork(config, load_pretrained=False)
    result = network.load_state_dict(start.network.state_dict(), strict=False)
    foreign = [k for k in result.missing_keys if not k.startswith("head.locator.")]
    if foreign or result.unexpected_keys:
        raise ValueError(
            f"{checkpoint_dir}: weights do not fit ({foreign[:3]}, {result.unexpected_keys[:3]})"
        )
    locator = network.locator
    assert locator is not None
    source_info: dict = {}
    if locator_from:
        source = load_checkpoint(locator_from)
        if source.network.locator is None or source.config.locator_camera != camera:
            raise ValueError(f"--locator-from {locator_from}: no goal locator on camera {camera!r}")
        locator.load_state_dict(source.network.locator.state_dict())
        source_info = source.info
    torch.manual_seed(seed)
    datasets, manifest = open_datasets(dataset_roots)
    if manifest.mismatches(start.manifest):
        raise DataError(
            f"the datasets are not {checkpoint_dir}'s embodiment: {manifest.mismatches(start.manifest)}"
        )
    if camera not in datasets[0].camera_names:
        raise DataError(f"the datasets have no camera {camera!r} ({datasets[0].camera_names})")
    train_refs, val_refs = split_episodes(datasets, val_fraction, seed, episodes_per_dataset)
    started = time.monotonic()
    images, sentences, goals, _ = load_frames(
        datasets, train_refs, camera, network, per_episode=frames_per_episode, progress=progress
    )
    val_images, val_sentences, val_goals, val_origin = load_frames(
        datasets, val_refs, camera, network, per_episode=frames_per_episode, progress=progress
    )
    all_tokens, all_mask, (which, val_which) = token_rows(
        InstructionEncoder(config), sentences, val_sentences
    )
    if not locator_from:  # the goal's statistics, which the locator's MLP output is scaled by
        locator.goal_mean.copy_(torch.from_numpy(goals.mean(axis=0)))
        locator.goal_std.copy_(torch.from_numpy(np.maximum(goals.std(axis=0), 1e-3)))
    target = (torch.from_numpy(goals) - locator.goal_mean) / locator.goal_std
    LOG.info(
        "%d training frames (%d episodes), %d validation frames (%d episodes), %d instructions; decoded in %.0f s",
        len(images), len(train_refs), len(val_images), len(val_refs), len(all_tokens), time.monotonic() - started,
    )  # fmt: skip
    bar = tqdm(total=epochs * math.ceil(len(images) / batch_size), desc="goal locator", unit="step",
               disable=not progress)  # fmt: skip

    def report(epoch: int, loss: float) -> None:
        errors = _errors_cm(locator, val_images, all_tokens, all_mask, which=val_which, goals=val_goals)
        bar.set_postfix(loss=f"{loss:.4f}", val_cm=f"{errors.mean():.2f}")
        if not progress:
            print(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, validation {errors.mean():.2f} cm")

    losses = fit_locator(
        locator, images, target, all_tokens, all_mask, which=which, epochs=epochs, batch_size=batch_size,
        lr=lr, shift=config.shift_pixels, on_step=lambda: bar.update(1), on_epoch=report,
    )  # fmt: skip
    bar.close()
    errors = _errors_cm(locator, val_images, all_tokens, all_mask, which=val_which, goals=val_goals)
    per_dataset = {
        Path(dataset_roots[d]).name: round(float(errors[val_origin == d].mean()), 2)
        for d in sorted(set(val_origin.tolist()))
    }
    summary: dict[str, object] = {
        "camera": camera,
        "datasets": [str(Path(r).resolve()) for r in dataset_roots],
        "epochs": epochs,
        "locator_from": str(Path(locator_from).resolve()) if locator_from else "",
        # How the copied locator was trained (its own run's summary), kept beside this run's scores.
        "locator_from_training": source_info.get("goal_locator", {}),
        "frames_per_episode": frames_per_episode,
        "training_frames": len(images),
        "loss_per_epoch": losses,
        "validation_goal_error_cm": round(float(errors.mean()), 2),
        "validation_goal_error_cm_per_dataset": per_dataset,
        "seconds": round(time.monotonic() - started),
    }
    info = {**start.info, "goal_locator": summary}
    save_checkpoint(Checkpoint(network, start.normalizer, start.manifest, info), output)
    return summary


def token_rows(
    encoder: InstructionEncoder, *sentence_lists: Sequence[str]
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(tokens [U, L, D], mask [U, L]) of the distinct sentences of ``sentence_lists``, and for each list the
    row [N] of each of its sentences: the instructions are embedded once, not per frame."""
    distinct = sorted({s for sentences in sentence_lists for s in sentences})
    tokens, mask = encoder.token_batch(distinct)
    row = {s: i for i, s in enumerate(distinct)}
    return tokens, mask, [torch.tensor([row[s] for s in sentences]) for sentences in sentence_lists]


def fit_locator(
    locator: GoalLocator,
    images: torch.Tensor,
    target: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    *,
    which: torch.Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    shift: int,
    on_step: Callable[[], None] = lambda: None,
    on_epoch: Callable[[int, float], None] = lambda epoch, loss: None,
) -> list[float]:
    """Train ``locator`` on pixels [N, 3, H, W] to the normalized ``target`` [N, 3] (smooth L1, AdamW with a
    one-cycle schedule, random shifts of up to ``shift`` px); ``tokens`` [U, L, D], ``mask`` [U, L]: the
    distinct instructions, ``which`` [N]: each sample's. Returns the mean loss of each epoch."""
    optimizer = torch.optim.AdamW(locator.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(images) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05
    )
    losses = []
    for epoch in range(epochs):
        locator.train()
        total = 0.0
        for chunk in torch.randperm(len(images)).split(batch_size):
            w = which[chunk]
            predicted = locator.normalized(random_shift(images[chunk].float(), shift), tokens[w], mask[w])
            loss = F.smooth_l1_loss(predicted, target[chunk], beta=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(chunk)
            on_step()
        losses.append(round(total / len(images), 5))
        on_epoch(epoch, total / len(images))
    locator.eval()
    return losses


@torch.no_grad()
def _errors_cm(locator, images, tokens, mask, *, which, goals: np.ndarray) -> np.ndarray:
    """Per frame: the distance (cm, xyz) of the locator's goal from the truth."""
    locator.eval()
    out = [
        locator(images[i : i + 256], tokens[which[i : i + 256]], mask[which[i : i + 256]])
        for i in range(0, len(images), 256)
    ]
    return 100 * np.linalg.norm(torch.cat(out).numpy() - goals, axis=1)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vla-train-locator", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a native VLA checkpoint with the referent pathway")
    p.add_argument("datasets", nargs="+", help="simulator datasets (with observation.environment_state)")
    p.add_argument("--output", required=True, help="where to write the checkpoint with its goal locator")
    p.add_argument("--camera", default="front", help="the camera the locator reads (default: front)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--frames-per-episode", type=int, default=6, help="evenly spaced, the first among them")
    p.add_argument("--episodes-per-dataset", type=int, default=0, help="each dataset's first N (0: all)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--locator-from", default="", help="start from this checkpoint's goal locator "
                   "(--epochs 0: copy it onto CHECKPOINT and score it)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="print one line per epoch instead of a bar")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.epochs < (0 if a.locator_from else 1) or a.frames_per_episode < 1 or a.batch_size < 1:
        p.error("--epochs (>= 0 with --locator-from), --frames-per-episode and --batch-size must be positive")
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        summary = train_locator(
            a.checkpoint, a.datasets, a.output, camera=a.camera, epochs=a.epochs,
            frames_per_episode=a.frames_per_episode, episodes_per_dataset=a.episodes_per_dataset,
            batch_size=a.batch_size, lr=a.lr, seed=a.seed, progress=not a.no_progress, locator_from=a.locator_from,
        )  # fmt: skip
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"vla-train-locator: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.output}: validation goal error {summary['validation_goal_error_cm']} cm")
    for name, cm in summary["validation_goal_error_cm_per_dataset"].items():  # type: ignore[union-attr]
        print(f"  {name}: {cm} cm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
