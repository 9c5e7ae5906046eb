"""``vla-train``: train the native VLA (or the textbook baseline) on one or more LeRobot v3 datasets.

    vla-train /data/pick /data/stack --output outputs/run1 --epochs 30
    vla-train /data/pick --output outputs/base1 --policy textbook_baseline
    torchrun --nproc_per_node 4 -m vla_policy.train /data/pick --output outputs/run1   # DDP, no code change

Built to fit 2 CPU cores: every frame is decoded and resized once and cached as uint8, so an epoch never
touches video. The native VLA trains its small keypoint encoders end to end on those pixels (random shifts
inside the network); the textbook baseline's frozen EfficientNet-Lite0 trunk instead encodes every frame once
per augmented copy, and its features are cached (float16). ``--freeze-encoders`` (after ``--init-from``) keeps a
native VLA's encoders as they are and caches their keypoints instead (the clean view and
``--augmented-copies`` shifted ones, kept on disk per dataset and encoders by ``--keypoint-cache``): the MLP,
the action head and the localization head then train on vectors, tens of times faster per epoch than end to
end. Writes ``<output>/best`` and ``<output>/last`` (checkpoints ``load_policy`` reads), ``train_state/``
(optimizer and RNG state for ``--resume``), ``metrics.csv``, ``loss_curve.png`` and ``summary.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm
from vla_collector.lerobot import LeRobotV3Dataset
from vla_common.atomic import write_json_atomic
from vla_common.manifest import EmbodimentManifest

from vla_policy.data import (
    EpisodeRef,
    SampleSet,
    build_samples,
    compute_normalizer,
    config_for_dataset,
    environment_state_width,
    estimate_cache_bytes,
    manifest_with_stats,
    open_datasets,
    split_episodes,
)
from vla_policy.keypoint_cache import KeypointCache, cached_episodes, default_cache_dir, frozen_keypoints
from vla_policy.models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from vla_policy.models.config import (
    INFERENCE_ONLY_FIELDS,
    TRAINING_ONLY_FIELDS,
    ImageEncoderKind,
    ModelConfig,
    PolicyKind,
    TextEncoderKind,
)
from vla_policy.models.encoders import InstructionEncoder
from vla_policy.models.networks import VLANetwork
from vla_policy.models.normalization import Normalizer

LOG = logging.getLogger("vla_train")

BEST_DIR, LAST_DIR, STATE_DIR = "best", "last", "train_state"
METRICS_FILE, CURVE_FILE, SUMMARY_FILE = "metrics.csv", "loss_curve.png", "summary.json"
METRIC_COLUMNS = (
    "epoch", "step", "lr", "train_loss", "val_loss", "val_l1", "train_samples_per_s", "elapsed_s",
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    datasets: tuple[str, ...]
    output: str
    kind: PolicyKind = PolicyKind.NATIVE_VLA
    epochs: int = 30
    batch_size: int = 64  # per process under DDP
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    val_fraction: float = 0.1
    episodes_per_dataset: int = 0  # 0: every episode; N: each dataset's first N (learning curves, balance)
    augmented_copies: int = 2  # baseline: jittered/cropped views cached per frame besides the clean one
    seed: int = 0
    device: str = "auto"  # auto: cuda when available
    num_threads: int = 0  # 0: leave torch's default
    max_steps: int = 0  # 0: no cap (a quick smoke run sets it)
    precision: str = (
        "auto"  # auto: bf16 autocast on a GPU or a CPU with native bf16 (AMX/AVX512-BF16), else fp32
    )
    resume: bool = False
    # A checkpoint to start from (a DAgger round fine-tunes the previous round's policy). Its weights and its
    # normalization statistics are kept, so the datasets must share its embodiment and model config.
    init_from: str = ""
    # Train the heads on the native VLA's cached keypoints; its encoders stay those of --init-from/--resume.
    freeze_encoders: bool = False
    # Where --freeze-encoders keeps the keypoints it encodes, per dataset and encoders ("" : nowhere).
    keypoint_cache: str = ""
    progress: bool = True
    model_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", PolicyKind(self.kind))
        object.__setattr__(self, "datasets", tuple(str(d) for d in self.datasets))
        if not self.datasets:
            raise ValueError("give at least one dataset")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.lr <= 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise ValueError("lr and grad_clip must be positive, weight_decay >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("min_lr_ratio must be in [0, 1]")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.freeze_encoders and self.kind is not PolicyKind.NATIVE_VLA:
            raise ValueError(
                "--freeze-encoders is for the native VLA (the baseline's trunk is frozen already)"
            )
        if self.freeze_encoders and not (self.init_from or self.resume):
            raise ValueError("--freeze-encoders keeps trained encoders: give --init-from (or --resume)")
        if self.augmented_copies < 0 or self.warmup_steps < 0 or self.max_steps < 0 or self.num_threads < 0:
            raise ValueError("augmented_copies, warmup_steps, max_steps and num_threads must be >= 0")


@dataclass(frozen=True)
class TrainResult:
    output: Path
    best: Path
    last: Path
    epochs_done: int
    steps: int
    best_val_loss: float
    history: list[dict[str, float]]
    train_samples_per_s: float
    encode_frames_per_s: float


def cosine_lr(step: int, total: int, cfg: TrainConfig) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    progress = min(1.0, step / max(1, total))
    cosine = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * warm * cosine


class _Distributed:
    """torchrun's environment (RANK/WORLD_SIZE/LOCAL_RANK), or a single process."""

    def __init__(self, device: str) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and self.world > 1:
            device = f"cuda:{local}"
            torch.cuda.set_device(local)
        self.device = torch.device(device)
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


class _Step(nn.Module):
    """What DDP wraps: the trainable part, fed cached trunk features (baseline) or pixels (native)."""

    def __init__(self, network: VLANetwork, keypoints_given: bool = False) -> None:
        super().__init__()
        self.network = network
        self.keypoints_given = keypoints_given  # x is the frozen encoders' cached keypoints

    def forward(
        self,
        x: torch.Tensor,
        text: torch.Tensor,
        state: torch.Tensor,
        environment_state: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        return self.network.head_forward(x, text, state, environment_state, self.keypoints_given)


@dataclass(frozen=True)
class _Batch:
    x: torch.Tensor  # cached trunk features (baseline) or pixels (native)
    text: torch.Tensor
    state: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor
    environment_state: torch.Tensor | None  # localization targets, dataset units (None: no such loss)


def _batch(
    samples: SampleSet,
    idx: torch.Tensor,
    text_table: torch.Tensor,
    copy: torch.Tensor | None,
    device: torch.device,
) -> _Batch:
    copies = copy if copy is not None else torch.zeros(len(idx), dtype=torch.long)
    environment = samples.environment_state
    return _Batch(
        x=samples.features[idx, copies].to(device=device, dtype=torch.float32),
        text=text_table[samples.text_index[idx]].to(device),
        state=samples.state[idx].to(device),
        target=samples.target[idx].to(device),
        valid=samples.valid[idx].to(device),
        environment_state=environment[idx].to(device) if environment is not None else None,
    )


def _save_train_state(
    directory: Path, optimizer: torch.optim.Optimizer, state: dict[str, Any], generator: torch.Generator
) -> None:
    """Optimizer tensors to safetensors, the rest to JSON (no pickle)."""
    directory.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors = {
        f"{pid}.{name}": value.detach().cpu().contiguous()
        for pid, per_param in opt["state"].items()
        for name, value in per_param.items()
    }
    tensors["torch_rng"] = torch.get_rng_state()
    tensors["generator_rng"] = generator.get_state()
    save_file(tensors, str(directory / "optimizer.safetensors"))
    write_json_atomic(directory / "trainer_state.json", {**state, "param_groups": opt["param_groups"]})


def _load_train_state(
    directory: Path, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> dict[str, Any]:
    state = json.loads((directory / "trainer_state.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("torch_rng"))
    generator.set_state(tensors.pop("generator_rng"))
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        per_param.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("param_groups")})
    return state


def _write_metrics(output: Path, history: list[dict[str, float]]) -> None:
    with (output / METRICS_FILE).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in history:
            writer.writerow({k: row.get(k, "") for k in METRIC_COLUMNS})


def plot_loss_curve(output: Path, history: list[dict[str, float]]) -> None:
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_loss"] for r in history], label="train")
    if any(math.isfinite(r["val_loss"]) for r in history):
        ax.plot(epochs, [r["val_loss"] for r in history], label="val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (normalized units)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(output / CURVE_FILE, dpi=100)
    plt.close(fig)


def evaluate_loss(
    network: VLANetwork,
    step: _Step,
    samples: SampleSet,
    *,
    text_table: torch.Tensor,
    normalizer: Normalizer,
    device: torch.device,
    batch_size: int = 256,
) -> tuple[float, float]:
    """(mean loss in normalized units, mean |error| in dataset units) on the clean view of every sample."""
    step.eval()
    losses, l1s, count = 0.0, 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(samples), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(samples)))
            batch = _batch(samples, idx, text_table, None, device)
            target, valid = batch.target, batch.valid
            outputs = step(batch.x, batch.text, batch.state)
            loss, _ = network.loss(outputs, target, valid, batch.environment_state)
            # Relative targets: both sides lack the same state, so the error is the action error.
            pred = normalizer.unnormalize_action(outputs["actions"].double().cpu())
            truth = normalizer.unnormalize_action(target.double().cpu())
            mask = valid.cpu().double()[..., None]  # steps past an episode's end do not count
            losses += float(loss) * len(idx)
            l1s += float(((pred - truth).abs() * mask).sum() / (mask.sum() * pred.shape[-1])) * len(idx)
            count += len(idx)
    step.train()
    return losses / count, l1s / count


def use_bf16(precision: str, device: torch.device) -> bool:
    """Mixed precision (bf16 autocast, fp32 weights) where the hardware runs bf16 natively.

    Measured on a 2-core Xeon with AMX: the native VLA trains ~2x faster in bf16 than in fp32.
    """
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def train(cfg: TrainConfig) -> TrainResult:
    previous_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    dist = _Distributed(cfg.device)
    try:
        return _train(cfg, dist)
    finally:
        dist.close()
        torch.set_num_threads(previous_threads)


@dataclass(frozen=True)
class _Model:
    """The network to train, with what it was made for: from --resume, --init-from, or new."""

    config: ModelConfig
    network: VLANetwork
    normalizer: Normalizer
    resuming: bool
    # True where the environment-state statistics are still to be taken from the training samples.
    new_environment_stats: bool
    # The instructions the starting checkpoint was trained on (--init-from, --resume): still the model's
    # own after a fine-tuning run whose data lacks some of them (a DAgger round on one family, a replay
    # subset), so they stay in its instruction span and list (instruction_nearest, policy_node's OOD flag).
    known_instructions: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Samples:
    """The training and validation samples, their instructions encoded, and the cost of building them."""

    train_set: SampleSet
    val_set: SampleSet | None
    train_text: torch.Tensor
    val_text: torch.Tensor | None
    n_frames: int
    encode_s: float
    encode_fps: float


def _train(cfg: TrainConfig, dist: _Distributed) -> TrainResult:
    output = Path(cfg.output)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # noqa: NPY002  (third-party code may use the global generator)
    if dist.device.type == "cuda":  # CPU kernels are deterministic already; the call itself costs ~2 s
        torch.use_deterministic_algorithms(True, warn_only=True)
    datasets, manifest = open_datasets(cfg.datasets)
    train_eps, val_eps = split_episodes(datasets, cfg.val_fraction, cfg.seed, cfg.episodes_per_dataset)
    state_dir = output / STATE_DIR
    model = _prepare_model(cfg, datasets, manifest, train_eps, state_dir)
    config, network, normalizer = model.config, model.network, model.normalizer
    manifest = manifest_with_stats(manifest, normalizer)
    network.to(dist.device)
    samples = _prepare_samples(
        cfg, dist, datasets=datasets, train_eps=train_eps, val_eps=val_eps, model=model
    )
    train_set = samples.train_set

    # --- optimisation ----------------------------------------------------------------------------------
    if cfg.freeze_encoders:
        network.head.encoders.requires_grad_(False)
    step_module = _Step(network, keypoints_given=cfg.freeze_encoders).to(dist.device)
    trainable = [p for p in step_module.parameters() if p.requires_grad]
    optimizer = _optimizer(trainable, cfg)
    ddp = _data_parallel(step_module, dist)
    generator = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(len(train_set) / dist.world / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs  # the schedule's length; --max-steps only stops early
    stop_step = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    history: list[dict[str, float]] = []
    step, start_epoch, best_val = 0, 0, math.inf
    if model.resuming:
        saved = _load_train_state(state_dir, optimizer, generator)
        step, start_epoch, best_val = saved["step"], saved["epoch"], saved["best_val"]
        history = saved["history"]
        if saved["train_episodes"] != [list(r) for r in train_eps]:
            raise ValueError("--resume: the train/val split differs from the first run (other data or seed?)")
    amp = use_bf16(cfg.precision, dist.device)
    info_base = _run_info(
        cfg, config, train_eps, val_eps, train_set, known_instructions=model.known_instructions
    )
    train_time, train_samples = 0.0, 0
    bar = tqdm(total=stop_step, initial=step, desc=f"train {config.kind.value}", unit="step",
               disable=not (cfg.progress and dist.main))  # fmt: skip
    epoch = start_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if step >= stop_step:
            break
        ddp.train()  # a resumed network comes back from load_checkpoint in eval mode
        t_epoch = time.perf_counter()
        step, epoch_loss, epoch_n, lr = _train_epoch(
            ddp, network, optimizer, trainable=trainable, samples=samples, generator=generator, cfg=cfg,
            dist=dist, step=step, stop_step=stop_step, total_steps=total_steps, amp=amp, bar=bar,
        )  # fmt: skip
        elapsed = time.perf_counter() - t_epoch
        train_time += elapsed
        train_samples += epoch_n
        train_loss = dist.mean(epoch_loss / max(epoch_n, 1))
        val_loss, val_l1 = (math.nan, math.nan)
        if samples.val_set is not None and samples.val_text is not None:
            val_loss, val_l1 = evaluate_loss(
                network, step_module, samples.val_set, text_table=samples.val_text, normalizer=normalizer,
                device=dist.device,
            )  # fmt: skip
        row = {
            "epoch": epoch + 1, "step": step, "lr": lr, "train_loss": train_loss, "val_loss": val_loss,
            "val_l1": val_l1, "train_samples_per_s": epoch_n * dist.world / max(elapsed, 1e-9),
            "elapsed_s": train_time,
        }  # fmt: skip
        history.append(row)
        score = val_loss if math.isfinite(val_loss) else train_loss
        improved = score < best_val
        best_val = min(best_val, score)
        if dist.main:
            info = {**info_base, "epoch": epoch + 1, "step": step, "val_loss": val_loss, "val_l1": val_l1,
                    "train_loss": train_loss}  # fmt: skip
            ckpt = Checkpoint(network=network, normalizer=normalizer, manifest=manifest, info=info)
            trainer_state = {"step": step, "epoch": epoch + 1, "best_val": best_val, "history": history,
                             "train_episodes": info_base["train_episodes"]}  # fmt: skip
            _save_epoch(output, ckpt, improved, (optimizer, generator, trainer_state), history)
        dist.barrier()
    bar.close()
    samples_per_s = train_samples * dist.world / max(train_time, 1e-9)
    if dist.main:
        run = {
            "kind": config.kind.value, "epochs": epoch + 1 if history else start_epoch, "steps": step,
            "best_val_loss": best_val, "train_samples_per_s": samples_per_s, "train_s": train_time,
        }  # fmt: skip
        _write_summary(output, history, run=run, samples=samples, dist=dist, amp=amp)
    return TrainResult(
        output=output, best=output / BEST_DIR, last=output / LAST_DIR,
        epochs_done=int(history[-1]["epoch"]) if history else start_epoch, steps=step, best_val_loss=best_val,
        history=history, train_samples_per_s=samples_per_s, encode_frames_per_s=samples.encode_fps,
    )  # fmt: skip


def _write_summary(
    output: Path,
    history: list[dict[str, float]],
    *,
    run: dict[str, Any],
    samples: _Samples,
    dist: _Distributed,
    amp: bool,
) -> None:
    """summary.json (the run's figures, where it ran) and the loss curve."""
    summary = {
        "kind": run["kind"], "epochs": run["epochs"], "steps": run["steps"], "best_val_loss": run["best_val_loss"],
        "train_samples_per_s": run["train_samples_per_s"], "encode_frames_per_s": samples.encode_fps,
        "encode_s": samples.encode_s, "train_s": run["train_s"], "train_frames": samples.n_frames,
        "device": str(dist.device), "world_size": dist.world, "threads": torch.get_num_threads(), "bf16": amp,
    }  # fmt: skip
    write_json_atomic(output / SUMMARY_FILE, summary)
    plot_loss_curve(output, history)


def _data_parallel(step_module: _Step, dist: _Distributed) -> nn.Module:
    """DDP around the trainable part when torchrun started several processes; the module itself otherwise."""
    if dist.world == 1:
        return step_module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(
        step_module, device_ids=[dist.device.index] if dist.device.type == "cuda" else None
    )


def _run_info(
    cfg: TrainConfig,
    config: ModelConfig,
    train_eps: Sequence[EpisodeRef],
    val_eps: Sequence[EpisodeRef],
    train_set: SampleSet,
    *,
    known_instructions: Sequence[str] = (),
) -> dict[str, Any]:
    """What every checkpoint of this run records about it (its info.json, before the epoch's figures)."""
    return {
        "kind": config.kind.value,
        "datasets": [str(Path(d).resolve()) for d in cfg.datasets],
        "train_episodes": [list(r) for r in train_eps],
        "val_episodes": [list(r) for r in val_eps],
        "seed": cfg.seed,
        # The instructions trained on (here or by the starting checkpoint): policy_node flags others as out
        # of distribution, instruction_nearest acts on the nearest of them.
        "instructions": sorted(set(train_set.texts) | set(known_instructions)),
        "train_config": {k: v for k, v in asdict(cfg).items() if k not in ("datasets", "output", "kind")},
    }


def _save_epoch(
    output: Path,
    ckpt: Checkpoint,
    improved: bool,
    train_state: tuple[torch.optim.Optimizer, torch.Generator, dict[str, Any]],
    history: list[dict[str, float]],
) -> None:
    """After an epoch: last/ (and best/ when it improved), train_state/ for --resume, metrics.csv."""
    save_checkpoint(ckpt, output / LAST_DIR)
    if improved:
        save_checkpoint(ckpt, output / BEST_DIR)
    optimizer, generator, trainer_state = train_state
    _save_train_state(output / STATE_DIR, optimizer, trainer_state, generator)
    _write_metrics(output, history)


def _prepare_model(
    cfg: TrainConfig,
    datasets: Sequence[LeRobotV3Dataset],
    manifest: EmbodimentManifest,
    train_eps: Sequence[EpisodeRef],
    state_dir: Path,
) -> _Model:
    """The model config these datasets and options give, and its network: the last checkpoint's (--resume),
    a checkpoint's weights and normalization (--init-from), or a new one normalized on the training split."""
    output = Path(cfg.output)
    overrides = dict(cfg.model_overrides)
    if float(overrides.get("localization_weight", 0.0)) > 0 and not overrides.get("localization_dim"):
        overrides["localization_dim"] = environment_state_width(datasets)
    config = config_for_dataset(manifest, datasets[0].camera_names, cfg.kind, **overrides)
    resuming = cfg.resume and (state_dir / "trainer_state.json").is_file()
    if resuming:
        previous = load_checkpoint(output / LAST_DIR)
        if previous.config != config:
            raise ValueError(f"--resume: {output / LAST_DIR} was trained with another model config")
        network, normalizer = previous.network, previous.normalizer
        new_stats = False
        known = tuple(previous.info.get("instructions", ()))
    elif cfg.init_from:
        start = load_checkpoint(cfg.init_from)
        # The span is set from this run's instructions and the checkpoint's; the localization head and the
        # referent pathway may be added.
        may_differ = (*TRAINING_ONLY_FIELDS, *INFERENCE_ONLY_FIELDS, "instruction_subspace", *_ADDABLE_HEADS)
        if cfg.freeze_encoders:  # only the encoders are kept: the heads may take another shape
            may_differ += _HEAD_SHAPE
        if replace(start.config, **{k: getattr(config, k) for k in may_differ}) != config or (
            start.config.localization_dim and start.config.localization_dim != config.localization_dim
        ):
            raise ValueError(
                f"--init-from {cfg.init_from}: its model config differs from the one these datasets and "
                "options give (cameras, image size, horizon or --model overrides other than "
                f"{', '.join(may_differ)})"
            )
        network = VLANetwork(config, load_pretrained=False)  # this run's training-only settings
        fresh = _load_widened(
            network, start.network, new_head=cfg.freeze_encoders and _head_reshaped(start.config, config)
        )
        if fresh:
            LOG.info("--init-from: new parameters %s start from their initialization", ", ".join(fresh))
        normalizer = start.normalizer
        new_stats = bool(config.localization_dim and not start.config.localization_dim)
        known = tuple(start.info.get("instructions", ()))
    else:
        network = VLANetwork(config, load_pretrained=True)
        normalizer = compute_normalizer(datasets, train_eps, config)
        new_stats = bool(config.localization_dim)
        network.set_action_bounds(*normalizer.action_bounds())
        known = ()
    return _Model(config, network, normalizer, resuming, new_stats, known)


# Model options that --init-from may switch on over a checkpoint without them.
_ADDABLE_HEADS = ("referent_input", "referent_slots", "localization_dim", "localization_weight")
# The heads' shape, which --freeze-encoders may change over its checkpoint (a wider or deeper MLP).
_HEAD_SHAPE = ("hidden_dim", "mlp_layers", "dropout")


def _head_reshaped(old: ModelConfig, new: ModelConfig) -> bool:
    return any(getattr(old, k) != getattr(new, k) for k in _HEAD_SHAPE)


def _load_widened(network: VLANetwork, start: VLANetwork, new_head: bool = False) -> list[str]:
    """Copy ``start``'s weights into ``network``; returns the parameters left at their initialization.

    A weight whose input grew (the MLP's first layer, when the referent pathway adds inputs after the old
    ones) keeps its old columns and gets zeros for the new: the widened network starts as ``start`` acts.
    ``new_head``: only the keypoint encoders are copied; the heads (another width or depth) start fresh.
    The instruction projection is not copied: training sets it from this run's instructions and ``start``'s.
    """
    old = start.state_dict()
    new = network.state_dict()
    fresh = []
    for key, value in new.items():
        if key.endswith("instruction_projection"):
            continue
        if new_head and key.startswith("head.") and not key.startswith("head.encoders."):
            fresh.append(key)
            continue
        if key not in old:
            if not key.startswith("environment_"):  # statistics, taken from this run's samples
                fresh.append(key)
            continue
        source = old[key]
        if source.shape == value.shape:
            value.copy_(source)
        elif source.dim() == 2 and source.shape[0] == value.shape[0] and source.shape[1] < value.shape[1]:
            value.zero_()
            value[:, : source.shape[1]].copy_(source)
        else:
            raise ValueError(
                f"--init-from: {key} has shape {tuple(source.shape)}, this model {tuple(value.shape)}"
            )
    return fresh


def _prepare_samples(
    cfg: TrainConfig,
    dist: _Distributed,
    *,
    datasets: Sequence[LeRobotV3Dataset],
    train_eps: Sequence[EpisodeRef],
    val_eps: Sequence[EpisodeRef],
    model: _Model,
) -> _Samples:
    """Every frame decoded once; the baseline's frozen trunk encodes each augmented copy. A new network also
    takes its environment-state statistics and its instruction span from the training samples here."""
    config, network = model.config, model.network
    trunk = network.trunk
    copies = cfg.augmented_copies if trunk is not None else 0  # the native VLA augments inside the network
    n_frames = sum(datasets[d].episodes[e].length for d, e in train_eps)
    if dist.main:
        size = estimate_cache_bytes(n_frames, network, 1 + copies)
        LOG.info(
            "%d training frames in %d episodes, %d validation episodes; cache ~%.0f MiB",
            n_frames, len(train_eps), len(val_eps), size / 2**20,
        )  # fmt: skip

    encoder = None
    if trunk is not None:
        trunk.to(dist.device)

        def encoder(x: torch.Tensor) -> torch.Tensor:
            return trunk(x.to(dist.device)).cpu()

    # Frozen encoders: episodes whose keypoints are cached are not decoded at all (their pixels would only be
    # dropped; for a refit on known data that was most of its time and memory).
    cache = KeypointCache(cfg.keypoint_cache) if cfg.freeze_encoders and cfg.keypoint_cache else None

    def cached(refs: Sequence[EpisodeRef]) -> set[EpisodeRef]:
        if cache is None:
            return set()
        return cached_episodes(network, datasets, refs, shifted_copies=cfg.augmented_copies, seed=cfg.seed,
                               cache=cache)  # fmt: skip

    t0 = time.perf_counter()
    skipped = cached(train_eps)
    train_set = build_samples(
        datasets, train_eps, config, model.normalizer, encode=encoder, augmented_copies=copies,
        seed=cfg.seed, progress=cfg.progress and dist.main, skip_pixels=skipped,
    )  # fmt: skip
    encode_s = time.perf_counter() - t0
    # Only the frames decoded count (0 when every episode's keypoints came from the cache).
    decoded = sum(datasets[d].episodes[e].length for d, e in train_eps if (d, e) not in skipped)
    encode_fps = decoded * (1 + copies) * len(config.camera_names) / max(encode_s, 1e-9)
    if train_set.environment_state is not None and model.new_environment_stats:
        environment = train_set.environment_state
        network.set_environment_stats(environment.mean(dim=0), environment.std(dim=0))
    val_set = (
        build_samples(datasets, val_eps, config, model.normalizer, encode=encoder, augmented_copies=0,
                      seed=cfg.seed, progress=False, skip_pixels=cached(val_eps))
        if val_eps else None
    )  # fmt: skip
    instructions = InstructionEncoder(config)
    train_text = instructions(train_set.texts)
    if config.instruction_subspace and not model.resuming:
        inherited = sorted(set(model.known_instructions) - set(train_set.texts))
        span_text = torch.cat([train_text, instructions(inherited)]) if inherited else train_text
        rank = network.head.set_instruction_span(span_text)
        if dist.main:
            LOG.info(
                "instruction subspace: rank %d of %d training instructions (%d of them from --init-from only)",
                rank, len(set(train_set.texts)) + len(inherited), len(inherited),
            )  # fmt: skip
    val_text = instructions(val_set.texts) if val_set is not None else None
    if cfg.freeze_encoders:  # after the span is set: the encoders' FiLM reads the projected instruction
        t0 = time.perf_counter()
        common = dict(shifted_copies=cfg.augmented_copies, seed=cfg.seed, device=dist.device, cache=cache)
        train_set = frozen_keypoints(network, train_set, train_text, datasets, progress=cfg.progress and dist.main,
                                     **common)  # fmt: skip
        if val_set is not None and val_text is not None:
            val_set = frozen_keypoints(network, val_set, val_text, datasets, progress=False, clean_only=True,
                                       **common)  # fmt: skip
        encode_s += time.perf_counter() - t0
    return _Samples(train_set, val_set, train_text, val_text, n_frames, encode_s, encode_fps)


def _optimizer(trainable: Sequence[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices and convolutions only, not on biases and norms."""
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
    )


def _train_epoch(
    ddp: nn.Module,
    network: VLANetwork,
    optimizer: torch.optim.Optimizer,
    *,
    trainable: Sequence[nn.Parameter],
    samples: _Samples,
    generator: torch.Generator,
    cfg: TrainConfig,
    dist: _Distributed,
    step: int,
    stop_step: int,
    total_steps: int,
    amp: bool,
    bar: Any,
) -> tuple[int, float, int, float]:
    """One pass over this rank's shuffled share of the training samples, stopping at ``stop_step``.
    -> (step, summed loss, samples seen, the last learning rate)."""
    train_set = samples.train_set
    order = torch.randperm(len(train_set), generator=generator)[dist.rank :: dist.world]
    copies = torch.randint(0, train_set.copies, (len(train_set),), generator=generator)
    epoch_loss, epoch_n = 0.0, 0
    for start in range(0, len(order), cfg.batch_size):
        if step >= stop_step:
            break
        idx = order[start : start + cfg.batch_size]
        batch = _batch(train_set, idx, samples.train_text, copies[idx], dist.device)
        lr = cosine_lr(step, total_steps, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(dist.device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = ddp(batch.x, batch.text, batch.state, batch.environment_state)
        loss, _ = network.loss(
            {k: v.float() for k, v in outputs.items()}, batch.target, batch.valid, batch.environment_state
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        optimizer.step()
        step += 1
        epoch_loss += float(loss.detach()) * len(idx)
        epoch_n += len(idx)
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{lr:.2e}")
    return step, epoch_loss, epoch_n, lr


TINY_MODEL = {
    "image_encoder": ImageEncoderKind.TINY_CNN,
    "text_encoder": TextEncoderKind.HASHED_BOW,
    "text_dim": 32,
    "encoder_channels": 8,
    "keypoints": 4,
    "fusion_dim": 64,
    "hidden_dim": 64,
    "image_height": 32,
    "image_width": 32,
    "tiny_cnn_channels": 16,
}


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="vla-train", description=__doc__.split("\n\n")[0])
    p.add_argument("datasets", nargs="+", help="LeRobot v3 dataset roots (same embodiment)")
    p.add_argument("--output", required=True, help="run directory (checkpoints, metrics, plots)")
    p.add_argument("--policy", default=PolicyKind.NATIVE_VLA.value, choices=[k.value for k in PolicyKind])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--weight-decay", type=float, default=1e-2)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--episodes-per-dataset", type=int, default=0,
                   help="use only each dataset's first N episodes (0: all)")  # fmt: skip
    p.add_argument(
        "--augmented-copies",
        type=int,
        default=2,
        help="cached augmented views per frame (textbook baseline; native with --freeze-encoders)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke runs)")
    p.add_argument("--resume", action="store_true", help="continue from <output>/last and train_state/")
    p.add_argument(
        "--init-from",
        default="",
        metavar="CHECKPOINT",
        help="start from this checkpoint's weights and normalization (fine-tuning, DAgger rounds); the instructions it "
        "was trained on stay the model's own",
    )
    p.add_argument(
        "--freeze-encoders",
        action="store_true",
        help="native VLA: keep the encoders of --init-from, cache their keypoints and train only the heads "
        "(--augmented-copies shifted views per frame); tens of times faster per epoch",
    )
    p.add_argument(
        "--keypoint-cache",
        default=str(default_cache_dir()),
        metavar="DIR",
        help="with --freeze-encoders: keep the encoded keypoints here, per dataset and encoders, and read them "
        "back in later runs ('none': do not cache; default %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 autocast on a GPU or a CPU with native bf16, else fp32")  # fmt: skip
    p.add_argument("--horizon", type=int, help="action chunk length (native VLA; default 10)")
    p.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), help="model input size (default 96 96)"
    )
    p.add_argument("--discrete-head", action="store_true", help="add the 256-bin action head")
    p.add_argument("--tiny", action="store_true", help="tiny random encoders and head (tests, smoke runs)")
    p.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                   help="any ModelConfig field, e.g. --model keypoints=64 --model hidden_dim=1024")  # fmt: skip
    a = p.parse_args(argv)
    overrides: dict[str, Any] = dict(TINY_MODEL) if a.tiny else {}
    if a.horizon is not None:
        overrides["horizon"] = a.horizon
    if a.image_size:
        overrides["image_height"], overrides["image_width"] = a.image_size
    if a.discrete_head:
        overrides["discrete_head"] = True
    for item in a.model:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--model expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value  # a bare string, e.g. image_encoder=tiny_cnn
    return TrainConfig(
        datasets=tuple(a.datasets), output=a.output, kind=PolicyKind(a.policy), epochs=a.epochs,
        batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay, warmup_steps=a.warmup_steps,
        val_fraction=a.val_fraction, episodes_per_dataset=a.episodes_per_dataset, augmented_copies=a.augmented_copies, seed=a.seed, device=a.device,
        num_threads=a.threads, max_steps=a.max_steps, resume=a.resume, init_from=a.init_from,
        freeze_encoders=a.freeze_encoders, progress=not a.no_progress,
        keypoint_cache="" if a.keypoint_cache.lower() == "none" else a.keypoint_cache, precision=a.precision,
        model_overrides=overrides,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # progress lines on stderr, as before
    cfg = parse_args(argv)
    result = train(cfg)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"best checkpoint: {result.best}  (val loss {result.best_val_loss:.4f}, "
          f"{result.train_samples_per_s:.0f} train samples/s, {result.encode_frames_per_s:.0f} frames/s encoded)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
