"""``vla-train-held``: perceive once, hold, act. A held-referent model from a native VLA checkpoint.

    vla-train-held CHECKPOINT DATASET [DATASET ...] --output OUT [--epochs 60]

CHECKPOINT's encoders and localization head find a block to under a centimetre when the instruction names
it as pick does, but not under every family's sentence (stack's block 6.8 cm off, its base 19 cm), and its
action MLP, which reads the keypoints at every frame, places 43/50 even when it is handed the true
referents. A state MLP that reads the referents of the episode's first frame, held, places 20/20 and stacks
18/20 (``bench/referent_oracle.py --held``). OUT is CHECKPOINT (encoders and localization head unchanged,
frozen) with ``held_referents`` on and two parts trained here:

1. the referent questions (:class:`~vla_policy.models.networks.ReferentQuestions`), fitted on the training
   sentences to the embeddings of questions the localization head answers well: "pick up the {block}
   block" for the target, the instruction itself for the goal (its answer's goal half), and for stack
   "pick up the {base} block" (its answer's target half: where the named block is).
   Which block is meant comes from ``vla_sim.tasks.parse_instruction``: the simulator's privilege, used in
   training only, as the referents' ground truth is;
2. the action MLP, on (normalized state, instruction, the episode's first-frame referents plus
   ``referent_noise``) -> the chunk of H actions (L1), on every frame of the datasets. No pixels: it
   trains in minutes on one thread.

At run time the policy perceives the referents once per instruction (``NativePolicy`` holds them until
``reset()`` or a new instruction) and acts on them. The first frames of up to ``--probe-episodes`` held-out
episodes per dataset measure the perceived referents against the truth; OUT's ``info["held_referents"]``
keeps those figures.
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
    chunk_valid,
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
TRAINED = ("head.questions.", "head.mlp.", "head.regression.")  # everything else comes from CHECKPOINT


def referent_questions(sentence: str) -> tuple[str, str, bool]:
    """The training sentences whose embeddings the two referent questions of ``sentence`` are fitted to, and
    whether the goal is the second answer's target half (a named block: stack's base)."""
    from vla_sim.tasks import TaskFamily, parse_instruction

    try:
        task = parse_instruction(sentence)
    except ValueError as e:
        raise DataError(f"cannot tell the referents of {sentence!r}: {e}") from None
    target = f"pick up the {task.slots['block']} block"
    if task.family in (TaskFamily.STACK, TaskFamily.STACK_TWO):
        return target, f"pick up the {task.slots['base']} block", True
    return target, sentence, False


def fit_questions(
    network: VLANetwork, text: InstructionEncoder, sentences: Sequence[str], steps: int = QUESTION_STEPS
) -> tuple[float, float]:
    """Fit the network's referent questions on ``sentences`` (full batch, Adam): (the mean cosine reached, the
    fraction of sentences whose goal half is chosen right)."""
    questions = network.head.questions
    asked = [referent_questions(s) for s in sentences]
    target = torch.stack([text([a[k] for a in asked]).float() for k in range(2)], dim=1)  # [N, 2, D]
    from_target = torch.tensor([float(a[2]) for a in asked])
    tokens, mask = text.token_batch(list(sentences))
    optimizer = torch.optim.Adam(questions.parameters(), 3e-3)
    questions.train()
    for _ in range(steps):
        predicted, logit = questions(tokens, mask)
        loss = (1 - (predicted * target).sum(-1)).mean()
        loss = loss + 0.1 * F.binary_cross_entropy_with_logits(logit, from_target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    questions.eval()
    with torch.no_grad():
        predicted, logit = questions(tokens, mask)
        chosen = float(((logit > 0).float() == from_target).float().mean())
        return float((predicted * target).sum(-1).mean()), chosen


class HeldSamples:
    """Every frame of ``refs`` as the action MLP reads it: normalized state, instruction row, the episode's
    first-frame referents (normalized), the normalized chunk target and its valid steps."""

    def __init__(self, datasets, refs, network: VLANetwork, normalizer) -> None:
        cfg = network.config
        state, referents, target, valid = [], [], [], []
        self.sentences: list[str] = []  # per frame
        for d, e in refs:
            ep = datasets[d].episode(e)
            if ep.environment_state is None:
                raise DataError(f"{datasets[d].root} episode {e} has no observation.environment_state")
            n = len(ep)
            state.append(ep.state)
            self.sentences += ep.tasks
            referents.append(np.repeat(ep.environment_state[:1], n, axis=0))
            target.append(chunk_targets(ep.action, ep.state, cfg.horizon, cfg.relative_actions))
            valid.append(chunk_valid(n, cfg.horizon))
        raw_state = torch.from_numpy(np.concatenate(state).astype(np.float32))
        self.state = normalizer.normalize_state(raw_state).float()
        self.row = torch.zeros(len(self.sentences), dtype=torch.long)  # set by index_instructions
        first = torch.from_numpy(np.concatenate(referents).astype(np.float32))
        self.referents = network.normalize_environment(first)
        self.target = normalizer.normalize_action(torch.from_numpy(np.concatenate(target))).float()
        self.valid = torch.from_numpy(np.concatenate(valid)).float()

    def index_instructions(self, rows: dict[str, int]) -> None:
        """Point every frame at its instruction's row of the embedding table."""
        self.row = torch.tensor([rows[s] for s in self.sentences])

    def __len__(self) -> int:
        return len(self.state)

    def loss(self, network: VLANetwork, text: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The masked L1 of the chunk on samples ``index`` (``text`` [U, D]: the instruction table)."""
        outputs = network.head(None, text[self.row[index]], self.state[index], self.referents[index])
        weight = self.valid[index]
        l1 = (outputs["actions"] - self.target[index]).abs().mean(-1)
        return (l1 * weight).sum() / weight.sum().clamp(min=1.0)


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
            pixels = [
                preprocess_frames(next(iter(ds.iter_frames(e, cam)))[None], cfg, augment=False, rng=None)
                for cam in cfg.camera_names
            ]
            images = torch.from_numpy(np.stack(pixels, axis=1))  # [1, n_cam, 3, H, W]
            tokens, mask = text.token_batch([ep.tasks[0]])
            state = normalizer.normalize_state(torch.from_numpy(ep.state[:1].astype(np.float32))).float()
            held = network.perceive(images, tokens, mask, state)[0].numpy()
            truth = ep.environment_state[0]
            errors.append([100 * float(np.linalg.norm(held[k : k + 2] - truth[k : k + 2])) for k in (0, 3)])
        mean = np.mean(errors, axis=0)
        figures[Path(ds.root).name] = {
            "episodes": len(errors), "target_cm": round(float(mean[0]), 2), "goal_cm": round(float(mean[1]), 2)
        }  # fmt: skip
    return figures


def held_model(start: Checkpoint, **overrides) -> VLANetwork:
    """CHECKPOINT's network with ``held_referents`` on and the parts trained here fresh (``TRAINED``)."""
    config = start.config.with_updates(held_referents=True, referent_slots="all", **overrides)
    network = VLANetwork(config, load_pretrained=False)
    kept = {k: v for k, v in start.network.state_dict().items() if not k.startswith(TRAINED)}
    result = network.load_state_dict(kept, strict=False)
    fresh = [k for k in result.missing_keys if not k.startswith(TRAINED)]
    if fresh or result.unexpected_keys:
        raise ValueError(
            f"CHECKPOINT does not fit a held-referent model: {fresh[:5]} {result.unexpected_keys[:5]}"
        )
    for name, p in network.named_parameters():
        p.requires_grad_(name.startswith(TRAINED))
    return network


def train_held(
    checkpoint: str,
    dataset_roots: Sequence[str],
    output: str,
    *,
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 1e-3,
    mlp_layers: int = 3,
    referent_noise: float = 0.1,
    val_fraction: float = 0.05,
    probe_episodes: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, object]:
    """Fit the questions and the action MLP (see the module's doc); write OUT; return its figures."""
    started = time.monotonic()
    torch.manual_seed(seed)
    start = load_checkpoint(checkpoint)
    if start.config.kind is not PolicyKind.NATIVE_VLA or not start.config.referent_input:
        raise ValueError(f"{checkpoint} is not a native VLA with the referent pathway (referent_input)")
    network = held_model(start, mlp_layers=mlp_layers, referent_noise=referent_noise)
    datasets, _ = open_datasets(dataset_roots)
    train_refs, val_refs = split_episodes(datasets, val_fraction, seed)
    text = InstructionEncoder(network.config)
    train, val = (HeldSamples(datasets, r, network, start.normalizer) for r in (train_refs, val_refs))
    LOG.info("%d training frames, %d validation frames", len(train), len(val))
    instructions = sorted(set(train.sentences) | set(val.sentences))
    if network.config.instruction_subspace:  # a wider span leaves the sentences already in it unchanged
        span = sorted(set(training_instructions(start.info) or ()) | set(instructions))
        network.head.set_instruction_span(text(span).float())
    cosine, halves = fit_questions(network, text, instructions)
    LOG.info(
        "referent questions fitted on %d sentences: cosine %.4f, goal half right for %.1f %%",
        len(instructions), cosine, 100 * halves,
    )  # fmt: skip
    rows = {s: i for i, s in enumerate(instructions)}
    train.index_instructions(rows)
    val.index_instructions(rows)
    table = text(instructions).float()
    trainable = [p for p in network.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=1e-4)
    per_epoch = max(1, math.ceil(len(train) / batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * per_epoch)
    history = []
    bar = tqdm(total=epochs * per_epoch, desc="train held-referent MLP", unit="step", disable=not progress)
    for epoch in range(epochs):
        network.head.train()
        total = 0.0
        for index in torch.randperm(len(train)).split(batch_size):
            loss = train.loss(network, table, index)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
            bar.update()
        network.head.eval()
        with torch.no_grad():
            val_l1 = (
                float(
                    np.mean([float(val.loss(network, table, i)) for i in torch.arange(len(val)).split(4096)])
                )
                if len(val)
                else float("nan")
            )
        history.append({"epoch": epoch, "train_l1": total / len(train), "val_l1": val_l1})
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
        "goal_half_right": halves,
        "val_l1": round(history[-1]["val_l1"], 5),
        "first_frame_error_cm": errors,
        "seconds": round(time.monotonic() - started),
    }
    info = dict(start.info)
    info.update(
        datasets=[str(Path(r).resolve()) for r in dataset_roots],
        instructions=instructions,
        held_referents={
            "init_from": str(checkpoint), "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "mlp_layers": mlp_layers, "referent_noise": referent_noise, "seed": seed,
            "history": history,
            **figures,
        },
    )  # fmt: skip
    for stale in (
        "train_episodes",
        "val_episodes",
        "train_config",
        "epoch",
        "step",
        "val_loss",
        "train_loss",
    ):
        info.pop(stale, None)  # CHECKPOINT's run, not this one
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
    p.add_argument("--mlp-layers", type=int, default=3, help="hidden layers of the action MLP")
    p.add_argument(
        "--referent-noise", type=float, default=0.1, help="Gaussian noise on the normalized referents"
    )
    p.add_argument("--val-fraction", type=float, default=0.05, help="held-out episodes (seeded)")
    p.add_argument("--probe-episodes", type=int, default=10, help="per dataset, for the first-frame error")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="print one line per epoch instead of a bar")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.epochs < 1 or a.batch_size < 1 or a.mlp_layers < 1 or a.probe_episodes < 0:
        p.error("--epochs, --batch-size and --mlp-layers must be positive, --probe-episodes >= 0")
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        figures = train_held(
            a.checkpoint, a.datasets, a.output, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
            mlp_layers=a.mlp_layers, referent_noise=a.referent_noise, val_fraction=a.val_fraction,
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
