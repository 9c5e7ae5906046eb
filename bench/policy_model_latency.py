"""Native VLA vs textbook baseline: batch-1 CPU inference latency (eager and ONNX) and training throughput.

Both models are built as shipped (default ``ModelConfig``: 96x96 input, all-MiniLM-L6-v2 instruction encoder,
front + wrist cameras, 8 joints; the native VLA's per-camera keypoint encoders, the baseline's frozen
EfficientNet-Lite0 ImageNet trunk), saved as checkpoints, exported to ONNX (one graph from pixels for the
native VLA, trunk + head for the baseline) and timed through ``load_policy``'s ``infer`` (preprocessing of two
96x96 frames + cached instruction embedding + network + un-normalization).

Training throughput is measured the way ``vla-train`` steps (batch 64 gathered from the cache and cast to
float32, forward under vla-train's ``--precision`` (default auto: bf16 autocast where the CPU runs bf16
natively), loss, backward, gradient clipping, AdamW): the native VLA
end to end from cached uint8 pixels (random shifts, encoders, MLP), the baseline's head on cached float16 trunk
features. The baseline also pays a one-off trunk pass per cached view (``encode img/s``); the native VLA's
cache is the resized pixels themselves.

Usage: python bench/policy_model_latency.py [--quick] [--threads N] [--precision auto|bf16|fp32]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from vla_common.robots import PANDA_COMMAND_JOINTS

NAMES = PANDA_COMMAND_JOINTS
SIZE = 96  # camera frames and model input (the default ModelConfig), so preprocessing does not resize
CAMERAS = ("front", "wrist")
BATCH = 64  # vla-train's default
CACHED_SAMPLES = 256


def build_checkpoint(kind: str, directory: Path) -> None:
    from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest
    from vla_policy.models import (
        Checkpoint,
        FeatureStats,
        ModelConfig,
        Normalizer,
        VLANetwork,
        save_checkpoint,
    )

    cfg = ModelConfig(
        kind=kind,
        camera_names=CAMERAS,
        state_dim=8,
        action_dim=8,
        image_height=SIZE,
        image_width=SIZE,
        horizon=10 if kind == "native_vla" else 1,
    )
    rng = np.random.default_rng(0)
    normalizer = Normalizer(
        FeatureStats.of(rng.normal(size=(100, 8))), FeatureStats.of(rng.normal(size=(100, 8)))
    )
    torch.manual_seed(0)
    net = VLANetwork(cfg, load_pretrained=True)
    if not net.caches_features:  # FiLM starts as the identity: give it weights, as a trained model has
        with torch.no_grad():
            for encoder in net.head.encoders:
                torch.nn.init.normal_(encoder.film.to_scale_shift.weight, std=0.1)
    net.set_action_bounds(*normalizer.action_bounds())
    manifest = EmbodimentManifest(
        robot_type="panda", joint_names=NAMES, action_names=NAMES, action_type=ActionType.ABSOLUTE_JOINT_POSITION,
        fps=10.0, cameras=tuple(CameraSpec(c, SIZE, SIZE) for c in CAMERAS), normalization=normalizer.to_dict(),
    )  # fmt: skip
    save_checkpoint(Checkpoint(net, normalizer, manifest), directory)


def time_infer(policy, repeats: int) -> dict[str, float]:
    from vla_common.features import STATE_KEY, image_key

    rng = np.random.default_rng(1)
    obs = {
        **{image_key(c): rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8) for c in CAMERAS},
        STATE_KEY: rng.normal(0, 0.2, 8).astype(np.float32),
        "task": "pick up the red block",
    }
    for _ in range(3):
        policy.infer(obs)  # warm-up (and the one MiniLM call for this instruction)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        policy.infer(obs)
        times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90))}


def training_cache(net, n: int, frozen_encoders: bool = False) -> torch.Tensor:
    """A training cache shaped as ``build_samples`` makes it for this network (random contents)."""
    cfg = net.config
    g = torch.Generator().manual_seed(0)
    n_cam, hw = len(cfg.camera_names), (cfg.image_height, cfg.image_width)
    if frozen_encoders:  # vla-train --freeze-encoders: float32 keypoints of the clean view + 2 shifted ones
        return torch.rand(n, 3, n_cam * cfg.keypoints * 2, generator=g) * 2 - 1
    if net.caches_features:  # baseline: float16 trunk features of the clean view + 2 augmented copies
        with torch.no_grad():
            c, h, w = net.trunk(torch.zeros(1, 3, *hw)).shape[1:]
        return torch.randn(n, 3, n_cam, c, h, w, generator=g).to(torch.float16)
    # native: the resized uint8 pixels, one copy (it shifts them itself)
    return torch.randint(0, 256, (n, 1, n_cam, 3, *hw), generator=g, dtype=torch.uint8)


def time_training(
    policy, steps: int, bf16: bool, frozen_encoders: bool = False
) -> dict[str, float | int | None]:
    """vla-train's step on cached inputs: gather a batch and cast it to float32, forward the trainable part
    (autocast to bf16 if asked), loss, backward, gradient clipping, AdamW. ``frozen_encoders``: the native
    VLA as ``vla-train --freeze-encoders`` trains it, its heads on cached keypoints."""
    net = policy.network
    cfg = net.config
    cache = training_cache(net, CACHED_SAMPLES, frozen_encoders)
    encode_fps = None
    if frozen_encoders:
        net.head.encoders.requires_grad_(False)
    if net.caches_features or frozen_encoders:  # the one-off cache: every view of every frame, encoded
        images = torch.randint(0, 256, (16, len(cfg.camera_names), 3, cfg.image_height, cfg.image_width))
        text = torch.nn.functional.normalize(torch.randn(16, cfg.text_dim), dim=-1)
        offsets = torch.randint(0, 2 * cfg.shift_pixels + 1, (16, len(cfg.camera_names), 2))  # shifted views

        def encode() -> None:
            if frozen_encoders:
                net.head.encode_keypoints(images, text, offsets)
            else:
                net.encode_images(images.float())

        with torch.inference_mode():
            encode()  # warm-up
            t0 = time.perf_counter()
            for _ in range(max(1, steps // 4)):
                encode()
            encode_fps = 16 * len(cfg.camera_names) * max(1, steps // 4) / (time.perf_counter() - t0)
    net.train()  # the baseline's trunk stays in eval mode (frozen); the native VLA shifts its images
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(1)
    state = torch.randn(CACHED_SAMPLES, cfg.state_dim, generator=g)
    target = torch.randn(CACHED_SAMPLES, cfg.horizon, cfg.action_dim, generator=g)
    valid = torch.ones(CACHED_SAMPLES, cfg.horizon, dtype=torch.bool)
    texts = torch.nn.functional.normalize(torch.randn(4, cfg.text_dim, generator=g), dim=-1)
    text_index = torch.randint(0, len(texts), (CACHED_SAMPLES,), generator=g)

    def step() -> None:
        idx = torch.randint(0, CACHED_SAMPLES, (BATCH,), generator=g)
        copy = torch.randint(0, cache.shape[1], (BATCH,), generator=g)
        x = cache[idx, copy].to(torch.float32)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            outputs = net.head_forward(x, texts[text_index[idx]], state[idx], keypoints_given=frozen_encoders)
        loss, _ = net.loss({k: v.float() for k, v in outputs.items()}, target[idx], valid[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    samples_per_s = steps * BATCH / (time.perf_counter() - t0)
    net.eval()
    return {
        "train_samples_per_s": samples_per_s,
        "encode_images_per_s": encode_fps,
        "trainable_params": sum(p.numel() for p in trainable),
        "frozen_params": sum(p.numel() for p in net.parameters() if not p.requires_grad),
        "cache_bytes_per_sample": cache[0].nbytes,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument(
        "--threads", type=int, default=1, help="torch/onnxruntime CPU threads (1: robust on a shared machine)"
    )
    p.add_argument(
        "--precision", choices=("auto", "bf16", "fp32"), default="auto",
        help="training steps, as vla-train --precision (auto: bf16 autocast where the CPU runs bf16 natively)",
    )  # fmt: skip
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    repeats, steps = (20, 8) if a.quick else (100, 40)

    from vla_policy.export import export_checkpoint
    from vla_policy.train import use_bf16

    from vla_policy import load_policy

    precision = "bf16" if use_bf16(a.precision, torch.device("cpu")) else "fp32"

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("native_vla", "textbook_baseline"):
            ckpt = Path(tmp) / kind
            build_checkpoint(kind, ckpt)
            report = export_checkpoint(ckpt, repeats=5)
            eager = load_policy(ckpt)
            onnx = load_policy(ckpt, runtime="onnx")
            e, o = time_infer(eager, repeats), time_infer(onnx, repeats)
            results[kind] = {
                "eager_median_ms": e["median_ms"], "eager_p90_ms": e["p90_ms"],
                "onnx_median_ms": o["median_ms"], "onnx_p90_ms": o["p90_ms"],
                "onnx_max_abs_diff": report.actions_max_abs_diff,
                "onnx_graphs": [Path(g).name for g in (report.encoder_path, report.head_path) if g],
                **time_training(eager, steps, precision == "bf16"),
            }  # fmt: skip
            if kind == "native_vla":  # the same checkpoint, its heads trained on cached keypoints
                results["native_vla_frozen_encoders"] = {
                    **results[kind], **time_training(eager, steps * 20, precision == "bf16", frozen_encoders=True),
                }  # fmt: skip
    print(f"CPU {platform.processor() or platform.machine()}, {a.threads} threads, torch {torch.__version__}")
    print(
        f"{'model':<28}{'eager ms':>10}{'onnx ms':>10}{'speedup':>9}{'train samp/s':>14}{'encode img/s':>14}"
        f"{'trainable':>12}{'frozen':>12}  onnx graphs"
    )
    for kind, r in results.items():
        encode = "-" if r["encode_images_per_s"] is None else f"{r['encode_images_per_s']:.0f}"
        print(
            f"{kind:<28}{r['eager_median_ms']:>10.2f}{r['onnx_median_ms']:>10.2f}"
            f"{r['eager_median_ms'] / r['onnx_median_ms']:>8.2f}x{r['train_samples_per_s']:>14.1f}{encode:>14}"
            f"{r['trainable_params']:>12,}{r['frozen_params']:>12,}  {' + '.join(r['onnx_graphs'])}"
        )
    print(
        f"(latency: load_policy(...).infer(obs) batch 1, two {SIZE}x{SIZE} cameras, median over {repeats} calls; "
        f"training: {precision}, batch {BATCH}, {steps} steps, native end to end from uint8 pixels, "
        "native_vla_frozen_encoders its heads on cached keypoints (vla-train --freeze-encoders; encode: its "
        "one-off keypoint cache), baseline head on cached features)"
    )
    print(
        json.dumps(
            {
                "bench": "policy_model_latency",
                "threads": a.threads,
                "quick": a.quick,
                "precision": precision,
                **results,
            }
        )
    )


if __name__ == "__main__":
    main()
