"""Native VLA vs textbook baseline: batch-1 CPU inference latency (eager and ONNX) and training throughput.

Both models are built as shipped (EfficientNet-Lite0 ImageNet trunk, all-MiniLM-L6-v2 instruction encoder,
front + wrist cameras, 8 joints), saved as checkpoints, exported to ONNX, and timed through ``load_policy``'s
``infer`` (preprocessing of two 128x128 frames + cached instruction embedding + network + un-normalization).
Training throughput is measured the way ``vla-train`` runs by default: frames/s through the frozen trunk (the
one-off feature cache) and samples/s of head training steps on cached features (batch 64).

Usage: python bench/policy_model_latency.py [--quick] [--threads N]
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

NAMES = (*(f"panda_joint{i}" for i in range(1, 8)), "panda_finger_joint1")


def build_checkpoint(kind: str, directory: Path) -> None:
    from vla_collector.manifest import ActionType, CameraSpec, EmbodimentManifest
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
        camera_names=("front", "wrist"),
        state_dim=8,
        action_dim=8,
        horizon=10 if kind == "native_vla" else 1,
    )
    rng = np.random.default_rng(0)
    normalizer = Normalizer(
        FeatureStats.of(rng.normal(size=(100, 8))), FeatureStats.of(rng.normal(size=(100, 8)))
    )
    net = VLANetwork(cfg, load_pretrained=True)
    net.set_action_bounds(*normalizer.action_bounds())
    manifest = EmbodimentManifest(
        robot_type="panda", joint_names=NAMES, action_names=NAMES, action_type=ActionType.ABSOLUTE_JOINT_POSITION,
        fps=10.0, cameras=(CameraSpec("front", 128, 128), CameraSpec("wrist", 128, 128)),
        normalization=normalizer.to_dict(),
    )  # fmt: skip
    save_checkpoint(Checkpoint(net, normalizer, manifest), directory)


def time_infer(policy, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    obs = {
        "observation.images.front": rng.integers(0, 255, (128, 128, 3), dtype=np.uint8),
        "observation.images.wrist": rng.integers(0, 255, (128, 128, 3), dtype=np.uint8),
        "observation.state": rng.normal(0, 0.2, 8).astype(np.float32),
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


def time_training(policy, steps: int, batch: int = 64) -> dict[str, float]:
    net = policy.network
    cfg = net.config
    c, h, w = net.feature_shape
    images = torch.randn(16, len(cfg.camera_names), 3, cfg.image_height, cfg.image_width)
    with torch.inference_mode():
        net.encode_images(images)  # warm-up
        t0 = time.perf_counter()
        for _ in range(max(1, steps // 4)):
            net.encode_images(images)
        encode_fps = 16 * len(cfg.camera_names) * max(1, steps // 4) / (time.perf_counter() - t0)
    net.head.train()
    params = [p for p in net.head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    feats = torch.randn(batch, len(cfg.camera_names), c, h, w)
    text = torch.nn.functional.normalize(torch.randn(batch, cfg.text_dim), dim=-1)
    state = torch.randn(batch, cfg.state_dim)
    target = torch.randn(batch, cfg.horizon, cfg.action_dim)

    def step() -> None:
        loss, _ = net.loss(net.head(feats, text, state), target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    samples_per_s = steps * batch / (time.perf_counter() - t0)
    net.eval()
    return {
        "train_samples_per_s": samples_per_s,
        "encode_images_per_s": encode_fps,
        "head_params": sum(p.numel() for p in params),
        "trunk_params": sum(p.numel() for p in net.trunk.parameters()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument(
        "--threads", type=int, default=1, help="torch/onnxruntime CPU threads (1: robust on a shared machine)"
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    repeats, steps = (20, 8) if a.quick else (100, 40)

    from vla_policy.export import export_checkpoint

    from vla_policy import load_policy

    results: dict[str, dict[str, float]] = {}
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
                "onnx_max_abs_diff": report.actions_max_abs_diff, **time_training(eager, steps),
            }  # fmt: skip
    print(f"CPU {platform.processor() or platform.machine()}, {a.threads} threads, torch {torch.__version__}")
    print(
        f"{'model':<20}{'eager ms':>10}{'onnx ms':>10}{'speedup':>9}{'train samp/s':>14}{'encode img/s':>14}{'head params':>13}"
    )
    for kind, r in results.items():
        print(
            f"{kind:<20}{r['eager_median_ms']:>10.2f}{r['onnx_median_ms']:>10.2f}"
            f"{r['eager_median_ms'] / r['onnx_median_ms']:>8.2f}x{r['train_samples_per_s']:>14.0f}"
            f"{r['encode_images_per_s']:>14.0f}{r['head_params']:>13,}"
        )
    print(
        "(latency: load_policy(...).infer(obs) batch 1, two 128x128 cameras, median over", repeats, "calls)"
    )
    print(json.dumps({"bench": "policy_model_latency", "threads": a.threads, "quick": a.quick, **results}))


if __name__ == "__main__":
    main()
