"""ONNX export of a checkpoint's network, validated against eager PyTorch.

    python -m vla_policy.export outputs/run1/best          # writes head.onnx (+ encoder.onnx) beside the weights
    policy = load_policy("outputs/run1/best", runtime="onnx")

The native VLA is one graph from pixels (its encoders are conditioned on the instruction). The textbook
baseline is two, because they run at different moments: its frozen trunk once per camera frame
(``encoder.onnx``), the head on cached features. The instruction embedding (MiniLM) is cached per
instruction and stays in PyTorch. An export is kept
only if onnxruntime reproduces eager outputs within the tolerance on random and real-shaped inputs; otherwise
the files are removed and :class:`ExportError` says by how much they differed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vla_policy.models.checkpoint import ENCODER_ONNX, HEAD_ONNX, load_checkpoint
from vla_policy.models.networks import VLANetwork
from vla_policy.models.policy import onnx_feed

OPSET = 17
TOKEN_INPUTS = ("tokens", "token_mask")  # a goal locator's inputs (the instruction's token embeddings)
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3


class ExportError(RuntimeError):
    """The exported graphs do not reproduce the eager model within tolerance."""


@dataclass(frozen=True)
class ExportReport:
    encoder_path: str  # empty for the native VLA (one graph)
    head_path: str
    encoder_max_abs_diff: float
    actions_max_abs_diff: float
    eager_ms: float  # batch 1, encoder + head, median
    onnx_ms: float

    @property
    def speedup(self) -> float:
        return self.eager_ms / self.onnx_ms if self.onnx_ms > 0 else float("nan")


class _Encoder(nn.Module):
    def __init__(self, network: VLANetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network.encode_images(images)


class _Head(nn.Module):
    """The regression output only: the 256-bin logits are a training signal and stay in PyTorch."""

    def __init__(self, network: VLANetwork) -> None:
        super().__init__()
        self.network = network

    def forward(
        self, features: torch.Tensor, text: torch.Tensor, state: torch.Tensor, *tokens
    ) -> torch.Tensor:
        return self.network.head_forward(
            features, text, state, **dict(zip(TOKEN_INPUTS, tokens, strict=False))
        )["actions"]


def example_inputs(network: VLANetwork, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(images, text, state), and for a model with a goal locator (tokens, token_mask) of 9 tokens, the last
    two of the first sentence padding."""
    cfg = network.config
    g = torch.Generator().manual_seed(seed)
    shape = (batch, len(cfg.camera_names), 3, cfg.image_height, cfg.image_width)
    if network.caches_features:
        images = torch.randn(*shape, generator=g)  # normalized, as the baseline's preprocessing gives them
    else:
        images = torch.randint(0, 256, shape, generator=g).float()  # the native VLA reads pixel values
    text = torch.nn.functional.normalize(torch.randn(batch, cfg.text_dim, generator=g), dim=-1)
    state = torch.randn(batch, cfg.state_dim, generator=g)
    if network.locator is None:
        return images, text, state
    tokens = torch.nn.functional.normalize(torch.randn(batch, 9, cfg.text_dim, generator=g), dim=-1)
    mask = torch.ones(batch, 9)
    mask[0, 7:] = 0.0
    return images, text, state, tokens, mask


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def export_checkpoint(
    checkpoint_dir: str | Path,
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    repeats: int = 20,
) -> ExportReport:
    import onnxruntime as ort

    root = Path(checkpoint_dir)
    network = load_checkpoint(root).network.eval()
    images, text, state, *tokens = example_inputs(network)
    token_names = list(TOKEN_INPUTS) if tokens else []
    split = network.caches_features
    encoder_path, head_path = root / ENCODER_ONNX, root / HEAD_ONNX
    encoder_path.unlink(missing_ok=True)  # a stale graph from an earlier export must not be picked up
    with torch.no_grad():  # not inference_mode: the exporter traces through these tensors
        features = network.encode_images(images)
    feature_name = "features" if split else "images"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and constant-folding notes
        if split:
            torch.onnx.export(
                _Encoder(network).eval(), (images,), str(encoder_path), input_names=["images"],
                output_names=["features"], dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                opset_version=OPSET, dynamo=False,
            )  # fmt: skip
        dynamic_axes = {n: {0: "batch"} for n in (feature_name, "text", "state", "actions")}
        dynamic_axes.update({n: {0: "batch", 1: "length"} for n in token_names})
        torch.onnx.export(
            _Head(network).eval(), (features, text, state, *tokens), str(head_path),
            input_names=[feature_name, "text", "state", *token_names], output_names=["actions"],
            dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False,
        )  # fmt: skip
    # A fresh wrapper is in training mode and the exporter restores that mode recursively afterwards:
    # evaluate the wrapped network in eval mode (dropout off) all the same.
    network.eval()
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    enc = (
        ort.InferenceSession(str(encoder_path), options, providers=["CPUExecutionProvider"])
        if split
        else None
    )
    head = ort.InferenceSession(str(head_path), options, providers=["CPUExecutionProvider"])

    def onnx_forward(
        im: torch.Tensor, tx: torch.Tensor, st: torch.Tensor, *tk
    ) -> tuple[np.ndarray, np.ndarray]:
        f = enc.run(None, {"images": im.numpy()})[0] if enc is not None else im.numpy()
        arrays = dict(features=f, images=f, text=tx.numpy(), state=st.numpy())
        arrays.update(zip(token_names, (t.numpy() for t in tk), strict=True))
        (a,) = head.run(None, onnx_feed(head, **arrays))
        return f, a

    def eager_forward(
        im: torch.Tensor, tx: torch.Tensor, st: torch.Tensor, *tk
    ) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            f = network.encode_images(im)
            outputs = network.head_forward(f, tx, st, **dict(zip(TOKEN_INPUTS, tk, strict=False)))
            return f.numpy(), outputs["actions"].numpy()

    enc_diff, act_diff = 0.0, 0.0
    for batch, seed in ((1, 0), (1, 1), (3, 2)):
        inputs = example_inputs(network, batch=batch, seed=seed)
        f_ref, a_ref = eager_forward(*inputs)
        f_onnx, a_onnx = onnx_forward(*inputs)
        enc_diff = max(enc_diff, float(np.abs(f_ref - f_onnx).max()))
        act_diff = max(act_diff, float(np.abs(a_ref - a_onnx).max()))
        if not (
            np.allclose(f_onnx, f_ref, atol=atol, rtol=rtol)
            and np.allclose(a_onnx, a_ref, atol=atol, rtol=rtol)
        ):
            encoder_path.unlink(missing_ok=True)
            head_path.unlink(missing_ok=True)
            raise ExportError(
                f"ONNX differs from eager beyond atol={atol}, rtol={rtol}: features {enc_diff:.2e}, "
                f"actions {act_diff:.2e}; the exported graphs were removed"
            )
    eager_ms = _median_ms(lambda: eager_forward(images, text, state, *tokens), repeats)
    onnx_ms = _median_ms(lambda: onnx_forward(images, text, state, *tokens), repeats)
    return ExportReport(
        str(encoder_path) if split else "", str(head_path), enc_diff, act_diff, eager_ms, onnx_ms
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vla_policy.export", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="checkpoint directory (as written by vla-train)")
    p.add_argument("--atol", type=float, default=DEFAULT_ATOL)
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        report = export_checkpoint(a.checkpoint, atol=a.atol, rtol=a.rtol)
    except ExportError as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 1
    print(f"wrote {report.head_path}" + (f" and {report.encoder_path}" if report.encoder_path else ""))
    print(
        f"max |onnx - eager|: features {report.encoder_max_abs_diff:.2e}, actions {report.actions_max_abs_diff:.2e}"
    )
    print(
        f"batch-1 latency: eager {report.eager_ms:.2f} ms, onnx {report.onnx_ms:.2f} ms ({report.speedup:.2f}x)"
    )
    print(json.dumps({**asdict(report), "speedup": report.speedup}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
