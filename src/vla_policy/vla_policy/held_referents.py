"""``vla-train-held``: perceive once, hold, act. The held pathway, added to a native VLA checkpoint.

    vla-train-held CHECKPOINT DATASET [DATASET ...] --output OUT [--held-families stack] [--epochs 60]
                   [--instruction] [--look-epochs 6]

CHECKPOINT's encoders and localization head find a block to under a centimetre when the instruction names
it as pick does, but not under stack's sentence (the block 6.8 cm off, the base 19 cm), and its MLP stacks
0/50. A state MLP that reads the two referents of the episode's first frame, held, stacks 18/20
(``bench/referent_oracle.py --held``). OUT is CHECKPOINT (everything kept, frozen) with ``held_referents``
on and the parts trained here:

1. the referent questions (:class:`~vla_policy.models.networks.ReferentQuestions`), fitted on the
   training sentences to the embeddings of questions the localization head answers well: "pick up the
   {block} block" for the target, the instruction itself for the goal (its answer's goal half), and for
   stack "pick up the {base} block" (its answer's target half: where the named block is); and to say which
   instructions the held pathway acts on (those of ``--held-families``). Which block is meant and the family
   come from ``vla_sim.tasks.parse_instruction``: the simulator's privilege, used in training only, as the
   referents' ground truth is;
2. the held actor (:class:`~vla_policy.models.networks.HeldActor`), on (normalized state, the episode's
   first-frame referents' xy) -> the chunk of H actions, the last action repeated past an episode's end
   (L1), on every frame of the held families' episodes. No pixels: minutes on one thread;
3. with ``--look-epochs N``, the held look: a copy of CHECKPOINT's encoders and localization head, tuned
   for N epochs on the first frame of every episode of DATASET (all families: the look reads any scene) to
   answer the two questions there (L1 on the halves the look reads, the training's random shifts). The
   MLP's encoders see every frame of an episode and find the block to 0.8 cm at the first; the copy sees
   only first frames and finds it to 0.3 cm. The MLP keeps the originals, bit for bit.

At run time the policy looks once per instruction (``NativePolicy`` holds the look until ``reset()`` or a
new instruction); the held actor acts where the questions say so, CHECKPOINT's MLP everywhere else, exactly
as before. The first frames of up to ``--probe-episodes`` held-out episodes per dataset measure the perceived
referents against the truth; OUT's ``info["held_referents"]`` keeps those figures.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vla_policy.data import (
    DataError,
    chunk_targets,
    open_datasets,
    preprocess_frames,
    split_episodes,
)
from vla_policy.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from vla_policy.models.config import PolicyKind
from vla_policy.models.encoders import InstructionEncoder
from vla_policy.models.networks import VLANetwork
from vla_policy.node_core import training_instructions

LOG = logging.getLogger("vla_policy.held_referents")
QUESTION_STEPS = 1500
TRAINED = ("head.questions.", "head.held_actor.")  # everything else comes from CHECKPOINT
LOOK = ("head.look_encoders.", "head.look_localize.")  # --look-epochs: start as CHECKPOINT's, then tuned


def referent_questions(sentence: str) -> tuple[str, str, bool, str]:
    """The training sentences whose embeddings the two referent questions of ``sentence`` are fitted to,
    whether the goal is the second answer's target half (a named block: stack's base), and the family."""
    from vla_sim.tasks import TaskFamily, parse_instruction

    try:
        task = parse_instruction(sentence)
    except ValueError as e:
        raise DataError(f"cannot tell the referents of {sentence!r}: {e}") from None
    target = f"pick up the {task.slots['block']} block"
    if task.family in (TaskFamily.STACK, TaskFamily.STACK_TWO):
        return target, f"pick up the {task.slots['base']} block", True, task.family.value
    return target, sentence, False, task.family.value


def fit_questions(
    network: VLANetwork,
    text: InstructionEncoder,
    sentences: Sequence[str],
    held_families: Sequence[str],
    steps: int = QUESTION_STEPS,
) -> tuple[float, float]:
    """Fit the network's referent questions on ``sentences`` (full batch, Adam): (the mean cosine reached,
    the fraction of sentences whose two flags (goal half, held pathway) come out right)."""
    questions = network.head.questions
    asked = [referent_questions(s) for s in sentences]
    target = torch.stack([text([a[k] for a in asked]).float() for k in range(2)], dim=1)  # [N, 2, D]
    flags = torch.tensor([[float(a[2]), float(a[3] in held_families)] for a in asked])
    tokens, mask = text.token_batch(list(sentences))
    optimizer = torch.optim.Adam(questions.parameters(), 3e-3)
    questions.train()
    for _ in range(steps):
        predicted, logits = questions(tokens, mask)
        loss = (1 - (predicted * target).sum(-1)).mean()
        loss = loss + 0.1 * F.binary_cross_entropy_with_logits(logits, flags)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    questions.eval()
    with torch.no_grad():
        predicted, logits = questions(tokens, mask)
        right = float(((logits > 0).float() == flags).all(dim=-1).float().mean())
        return float((predicted * target).sum(-1).mean()), right


class HeldSamples:
    """Every frame of ``refs`` as the held actor reads it (normalized state, the episode's first-frame
    referents in metres) and its target: the normalized chunk, the last action repeated past the end (the
    held actor learns to stay where an episode ended, as ``bench/referent_oracle.py`` does)."""

    def __init__(self, datasets, refs, network: VLANetwork, normalizer) -> None:
        horizon = network.config.horizon
        state, referents, target = [], [], []
        self.sentences: list[str] = []  # per frame
        for d, e in refs:
            ep = datasets[d].episode(e)
            if ep.environment_state is None:
                raise DataError(f"{datasets[d].root} episode {e} has no observation.environment_state")
            state.append(ep.state)
            self.sentences += ep.tasks
            referents.append(np.repeat(ep.environment_state[:1], len(ep), axis=0))
            target.append(chunk_targets(ep.action, ep.state, horizon, network.config.relative_actions))
        self.state = normalizer.normalize_state(torch.from_numpy(np.concatenate(state).astype(np.float32)))
        self.referents = torch.from_numpy(np.concatenate(referents).astype(np.float32))
        self.target = normalizer.normalize_action(torch.from_numpy(np.concatenate(target))).float()
        self.text = torch.zeros(len(self.state), 0)  # set by embed_instructions

    def embed_instructions(self, network: VLANetwork, text: InstructionEncoder) -> None:
        """Each frame's (projected) instruction embedding, as the held actor reads it."""
        distinct = sorted(set(self.sentences))
        with torch.no_grad():
            table = network.head.project_instruction(text(distinct).float())
        row = {s: i for i, s in enumerate(distinct)}
        self.text = table[torch.tensor([row[s] for s in self.sentences], dtype=torch.long)]

    def __len__(self) -> int:
        return len(self.state)

    def loss(self, network: VLANetwork, index: torch.Tensor) -> torch.Tensor:
        predicted = network.head.held_actor(self.state[index], self.referents[index], self.text[index])
        return (predicted - self.target[index]).abs().mean()


def first_frame_pixels(dataset, episode: int, cfg) -> np.ndarray:
    """[n_cam, 3, H, W]: an episode's first frame of every camera, preprocessed as the look sees it."""
    return np.concatenate(
        [
            preprocess_frames(
                next(iter(dataset.iter_frames(episode, cam)))[None], cfg, augment=False, rng=None
            )
            for cam in cfg.camera_names
        ]
    )


class LookFrames:
    """The first frame of every episode of ``refs`` as the look sees it (pixels, normalized state, the
    instruction's two referent questions) and what its answers must say there: the target (the first
    answer's target half) and the goal (the second answer's target half where the goal is a named block,
    else its goal half), normalized as the localization head answers. The halves nobody reads are free."""

    def __init__(self, datasets, refs, network: VLANetwork, normalizer, text: InstructionEncoder) -> None:
        cfg = network.config
        pixels, state, truth, sentences = [], [], [], []
        for d, e in refs:
            ds, ep = datasets[d], datasets[d].episode(e)
            if ep.environment_state is None:
                raise DataError(f"{ds.root} episode {e} has no observation.environment_state")
            pixels.append(first_frame_pixels(ds, e, cfg))
            state.append(ep.state[0])
            truth.append(ep.environment_state[0])
            sentences.append(ep.tasks[0])
        self.pixels = torch.from_numpy(np.stack(pixels))  # [N, n_cam, 3, H, W]
        self.state = normalizer.normalize_state(torch.from_numpy(np.stack(state).astype(np.float32))).float()
        metres = torch.from_numpy(np.stack(truth).astype(np.float32))
        mean, std = network.environment_mean.float(), network.environment_std.float()
        half = cfg.localization_dim // 2
        self.target = (metres[:, :half] - mean[:half]) / std[:half]
        goal_is_block = torch.tensor([referent_questions(s)[2] for s in sentences])[:, None]
        self.goal_is_block = goal_is_block.float()
        self.goal = torch.where(
            goal_is_block,
            (metres[:, half:] - mean[:half]) / std[:half],
            (metres[:, half:] - mean[half:]) / std[half:],
        )
        distinct = sorted(set(sentences))
        tokens, mask = text.token_batch(distinct)
        with torch.no_grad():
            asked, _ = network.head.questions(tokens, mask)  # [n, 2, D]: fitted before the look trains
        row = {s: i for i, s in enumerate(distinct)}
        self.asked = asked[torch.tensor([row[s] for s in sentences], dtype=torch.long)]

    def __len__(self) -> int:
        return len(self.state)

    def loss(self, network: VLANetwork, index: torch.Tensor, shift: bool = True) -> torch.Tensor:
        """Mean L1 (normalized) of the two answers read, over the frames ``index``."""
        head, half = network.head, network.config.localization_dim // 2
        images, state, asked = self.pixels[index], self.state[index], self.asked[index]
        first = head.look(images, asked[:, 0], state, shift=shift)
        second = head.look(images, asked[:, 1], state, shift=shift)
        w = self.goal_is_block[index]
        goal = w * second[:, :half] + (1 - w) * second[:, half:]
        return (first[:, :half] - self.target[index]).abs().mean() + (goal - self.goal[index]).abs().mean()


def train_look(
    network: VLANetwork,
    train: LookFrames,
    val: LookFrames,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 32,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Fine-tune the held look's encoders and head (the copies ``held_model`` made) on first frames, with the
    training's random shifts; the MLP's encoders and head stay as they were."""
    head = network.head
    params = [*head.look_encoders.parameters(), *head.look_localize.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    per_epoch = max(1, len(train) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * per_epoch)
    history = []
    bar = tqdm(total=epochs * per_epoch, desc="tune the look", unit="step", disable=not progress)
    for epoch in range(epochs):
        total = 0.0
        for index in torch.randperm(len(train))[: per_epoch * batch_size].split(batch_size):
            loss = train.loss(network, index)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
            bar.update()
        with torch.no_grad():
            val_l1 = (
                float(
                    np.mean(
                        [float(val.loss(network, i, shift=False)) for i in torch.arange(len(val)).split(64)]
                    )
                )
                if len(val)
                else float("nan")
            )
        history.append({"epoch": epoch, "train_l1": round(total / per_epoch, 5), "val_l1": round(val_l1, 5)})
        bar.set_postfix(train=f"{total / per_epoch:.4f}", val=f"{val_l1:.4f}")
        if not progress:
            LOG.info("look epoch %d: train L1 %.4f, validation L1 %.4f", epoch, total / per_epoch, val_l1)
    bar.close()
    for p in params:
        p.requires_grad_(False)
    return history


def held_episodes(datasets, refs, held_families: Sequence[str]) -> list[tuple[int, int]]:
    """The episodes of ``refs`` whose instruction belongs to one of ``held_families``."""
    return [
        (d, e) for d, e in refs if referent_questions(datasets[d].episode(e).tasks[0])[3] in held_families
    ]


@torch.no_grad()
def first_frame_errors(
    datasets,
    refs,
    network: VLANetwork,
    normalizer,
    text: InstructionEncoder,
    *,
    per_dataset: int,
    progress: bool,
) -> dict[str, dict[str, float]]:
    """Per dataset: the perceived referents' mean xy error (cm) at the first frame of up to ``per_dataset``
    of ``refs``, for the target and the goal."""
    cfg = network.config
    chosen: dict[int, list[int]] = {}
    for d, e in refs:
        if len(chosen.get(d, [])) < per_dataset:
            chosen.setdefault(d, []).append(e)
    network.eval()
    figures = {}
    for d, episodes in tqdm(
        chosen.items(), desc="first-frame referents", unit="dataset", disable=not progress
    ):
        ds = datasets[d]
        errors = []
        for e in episodes:
            ep = ds.episode(e)
            images = torch.from_numpy(first_frame_pixels(ds, e, cfg)[None])  # [1, n_cam, 3, H, W]
            tokens, mask = text.token_batch([ep.tasks[0]])
            state = normalizer.normalize_state(torch.from_numpy(ep.state[:1].astype(np.float32))).float()
            held = network.perceive(images, tokens, mask, state)[0][0].numpy()
            truth = ep.environment_state[0]
            errors.append([100 * float(np.linalg.norm(held[k : k + 2] - truth[k : k + 2])) for k in (0, 3)])
        mean = np.mean(errors, axis=0)
        figures[Path(ds.root).name] = {
            "episodes": len(errors), "target_cm": round(float(mean[0]), 2), "goal_cm": round(float(mean[1]), 2)
        }  # fmt: skip
    return figures


def held_model(start: Checkpoint, instruction: bool = False, look: bool = False) -> VLANetwork:
    """CHECKPOINT's network with ``held_referents`` on and the parts trained here fresh (``TRAINED``); with
    ``look`` the held look's encoders and head too, copies of CHECKPOINT's (``LOOK``, tuned later)."""
    config = start.config.with_updates(held_referents=True, held_instruction=instruction, held_look=look)
    network = VLANetwork(config, load_pretrained=False)
    result = network.load_state_dict(start.network.state_dict(), strict=False)
    fresh = [k for k in result.missing_keys if not k.startswith(TRAINED + LOOK)]
    if fresh or result.unexpected_keys:
        raise ValueError(
            f"CHECKPOINT does not fit a held-referent model: {fresh[:5]} {result.unexpected_keys[:5]}"
        )
    if look:
        network.head.look_encoders.load_state_dict(network.head.encoders.state_dict())
        network.head.look_localize.load_state_dict(network.head.localize.state_dict())
    for name, p in network.named_parameters():
        p.requires_grad_(name.startswith(TRAINED))
    return network


def train_held(
    checkpoint: str,
    dataset_roots: Sequence[str],
    output: str,
    *,
    held_families: Sequence[str] = ("stack",),
    instruction: bool = False,
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 1e-3,
    look_epochs: int = 0,
    look_lr: float = 3e-4,
    val_fraction: float = 0.05,
    probe_episodes: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, object]:
    """Fit the questions and the held actor (see the module's doc); write OUT; return its figures."""
    started = time.monotonic()
    torch.manual_seed(seed)
    start = load_checkpoint(checkpoint)
    if start.config.kind is not PolicyKind.NATIVE_VLA or not start.config.referent_input:
        raise ValueError(f"{checkpoint} is not a native VLA with the referent pathway (referent_input)")
    if start.config.held_referents:
        raise ValueError(
            f"{checkpoint} has a held pathway already: start from the checkpoint it was added to"
        )
    network = held_model(start, instruction, look=look_epochs > 0)
    datasets, _ = open_datasets(dataset_roots)
    all_train_refs, all_val_refs = split_episodes(datasets, val_fraction, seed)
    train_refs, val_refs = (held_episodes(datasets, r, held_families) for r in (all_train_refs, all_val_refs))
    if not train_refs:
        raise DataError(f"the datasets hold no episode of {list(held_families)}")
    train, val = (HeldSamples(datasets, r, network, start.normalizer) for r in (train_refs, val_refs))
    LOG.info("held actor: %d training frames, %d validation frames", len(train), len(val))
    text = InstructionEncoder(network.config)
    # CHECKPOINT's sentences (the MLP's; the questions learn to leave them to it) and the held episodes'.
    known = set(training_instructions(start.info) or ())
    sentences = set(train.sentences) | set(val.sentences)
    instructions = sorted(known | sentences)
    if network.config.instruction_subspace and not sentences <= known:  # else the MLP's inputs stay exact
        network.head.set_instruction_span(text(instructions).float())
    cosine, right = fit_questions(network, text, instructions, held_families)
    LOG.info(
        "referent questions fitted on %d sentences: cosine %.4f, flags right for %.1f %%",
        len(instructions), cosine, 100 * right,
    )  # fmt: skip
    look_history = []
    if look_epochs:  # every dataset's first frames, whatever the family: the look reads any scene
        network.eval()
        look_train, look_val = (
            LookFrames(datasets, r, network, start.normalizer, text) for r in (all_train_refs, all_val_refs)
        )
        LOG.info("look: %d training first frames, %d validation", len(look_train), len(look_val))
        look_history = train_look(
            network, look_train, look_val, epochs=look_epochs, lr=look_lr, progress=progress
        )
    for samples in (train, val):  # after the span is set: the actor reads projected embeddings
        samples.embed_instructions(network, text)
    actor = network.head.held_actor
    actor.set_input_stats(actor.inputs(train.state, train.referents, train.text))
    optimizer = torch.optim.AdamW(actor.parameters(), lr=lr, weight_decay=1e-4)
    per_epoch = max(1, math.ceil(len(train) / batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * per_epoch)
    history = []
    bar = tqdm(total=epochs * per_epoch, desc="train the held actor", unit="step", disable=not progress)
    for epoch in range(epochs):
        actor.train()
        total = 0.0
        for index in torch.randperm(len(train)).split(batch_size):
            loss = train.loss(network, index)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
            bar.update()
        actor.eval()
        with torch.no_grad():
            val_l1 = float(val.loss(network, torch.arange(len(val)))) if len(val) else float("nan")
        history.append({"epoch": epoch, "train_l1": round(total / len(train), 5), "val_l1": round(val_l1, 5)})
        bar.set_postfix(train=f"{total / len(train):.4f}", val=f"{val_l1:.4f}")
        if not progress:
            LOG.info("epoch %d: train L1 %.4f, validation L1 %.4f", epoch, total / len(train), val_l1)
    bar.close()
    network.eval()
    errors = first_frame_errors(
        datasets, val_refs, network, start.normalizer, text, per_dataset=probe_episodes, progress=progress
    )
    figures = {
        "question_cosine": round(cosine, 4),
        "flags_right": right,
        "val_l1": history[-1]["val_l1"],
        "first_frame_error_cm": errors,
        "seconds": round(time.monotonic() - started),
    }
    info = dict(start.info)
    info.update(
        instructions=instructions,
        held_referents={
            "init_from": str(checkpoint), "datasets": [str(Path(r).resolve()) for r in dataset_roots],
            "held_families": list(held_families), "instruction": instruction, "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "look_epochs": look_epochs, "look_lr": look_lr,
            "look_history": look_history, "seed": seed, "history": history, **figures,
        },
    )  # fmt: skip
    save_checkpoint(Checkpoint(network, start.normalizer, start.manifest, info), output)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vla-train-held", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="a native VLA checkpoint with the referent pathway (referent_input)")
    p.add_argument("datasets", nargs="+", help="simulator datasets (with observation.environment_state)")
    p.add_argument("--output", required=True, help="where to write the held-referent checkpoint")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--held-families", nargs="+", default=["stack"],
                   help="the task families the held pathway acts on (default: stack)")  # fmt: skip
    p.add_argument("--instruction", action="store_true",
                   help="the held actor also reads the instruction (one actor for several families)")  # fmt: skip
    p.add_argument("--look-epochs", type=int, default=0,
                   help="tune a copy of the encoders and localization head on every episode's first frame "
                   "(the held look; 0: the look is the MLP's encoders and head)")  # fmt: skip
    p.add_argument("--look-lr", type=float, default=3e-4)
    p.add_argument("--val-fraction", type=float, default=0.05, help="held-out episodes (seeded)")
    p.add_argument("--probe-episodes", type=int, default=10, help="per dataset, for the first-frame error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="print one line per epoch instead of a bar")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.epochs < 1 or a.batch_size < 1 or a.probe_episodes < 0 or a.look_epochs < 0:
        p.error("--epochs and --batch-size must be positive, --probe-episodes and --look-epochs >= 0")
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        figures = train_held(
            a.checkpoint, a.datasets, a.output, held_families=a.held_families, instruction=a.instruction,
            epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, look_epochs=a.look_epochs,
            look_lr=a.look_lr, val_fraction=a.val_fraction,
            probe_episodes=a.probe_episodes, seed=a.seed, progress=not a.no_progress,
        )  # fmt: skip
    except (DataError, ValueError, FileNotFoundError) as e:
        print(f"vla-train-held: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {a.output}: questions' cosine {figures['question_cosine']}, validation L1 {figures['val_l1']}"
    )
    for name, cm in figures["first_frame_error_cm"].items():  # type: ignore[union-attr]
        print(
            f"  {name}: first frame, target {cm['target_cm']} cm, goal {cm['goal_cm']} cm ({cm['episodes']} episodes)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
