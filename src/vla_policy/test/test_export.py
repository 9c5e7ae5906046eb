"""ONNX export validated against eager; load_policy(runtime="onnx") gives the same chunks.

The native VLA is one graph from pixels (head.onnx: images, text, state); the textbook baseline is two (its
frozen trunk as encoder.onnx, the head on its features).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from test_model import give_film_weights, observation, tiny_checkpoint, tiny_config
from vla_policy.export import ExportError, export_checkpoint, main
from vla_policy.models import PolicyKind, load_policy, save_checkpoint
from vla_policy.models.checkpoint import ENCODER_ONNX, HEAD_ONNX


def native_checkpoint(**changes):
    """A tiny native VLA whose FiLM is not the identity, so the instruction reaches the encoders' graph."""
    ckpt = tiny_checkpoint(tiny_config(**changes))
    torch.manual_seed(1)
    give_film_weights(ckpt.network)
    return ckpt


def test_native_export_is_one_graph_from_pixels_that_matches_eager(tmp_path):
    save_checkpoint(native_checkpoint(discrete_head=True), tmp_path)
    (tmp_path / ENCODER_ONNX).write_bytes(b"stale graph of an earlier export")
    report = export_checkpoint(tmp_path, repeats=2)
    assert (tmp_path / HEAD_ONNX).is_file() and not (tmp_path / ENCODER_ONNX).exists()
    assert report.encoder_path == "" and report.head_path == str(tmp_path / HEAD_ONNX)
    assert report.actions_max_abs_diff < 1e-4
    assert report.eager_ms > 0 and report.onnx_ms > 0
    session = ort.InferenceSession(str(tmp_path / HEAD_ONNX), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images", "text", "state"]
    assert session.get_inputs()[0].shape[1:] == [2, 3, 32, 32]
    eager, onnx = load_policy(tmp_path), load_policy(tmp_path, runtime="onnx")
    for task in ("push the red block left", "stack the blue block"):
        a, b = eager.infer(observation(task=task)), onnx.infer(observation(task=task))
        np.testing.assert_allclose(b.actions, a.actions, atol=1e-4)
        assert b.stamp == a.stamp and b.names == a.names
    # The instruction is a live input of the graph (FiLM inside the encoders), not a folded constant.
    other = onnx.infer(observation(task="stack the blue block")).actions
    assert not np.allclose(onnx.infer(observation()).actions, other, atol=1e-4)
    # Batches (vla-eval runs several frames at once) through the policy's ONNX path, from uint8 pixels.
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (3, 2, 3, 32, 32), generator=g, dtype=torch.uint8)
    text, state = torch.randn(3, 32, generator=g), torch.randn(3, 8, generator=g)
    torch.testing.assert_close(
        onnx.predict_normalized(images, text, state),
        eager.predict_normalized(images, text, state),
        atol=1e-4,
        rtol=0,
    )


def test_native_export_with_the_goal_only_referent_pathway_matches_eager(tmp_path):
    save_checkpoint(
        native_checkpoint(
            localization_dim=6, localization_weight=1.0, referent_input=True, referent_slots="goal"
        ),
        tmp_path,
    )
    report = export_checkpoint(tmp_path, repeats=1)
    assert report.actions_max_abs_diff < 1e-4
    eager, onnx = load_policy(tmp_path), load_policy(tmp_path, runtime="onnx")
    np.testing.assert_allclose(
        onnx.infer(observation()).actions, eager.infer(observation()).actions, atol=1e-4
    )


def test_baseline_export_is_a_trunk_graph_and_a_head_graph(tmp_path):
    save_checkpoint(tiny_checkpoint(tiny_config(PolicyKind.TEXTBOOK_BASELINE)), tmp_path)
    report = export_checkpoint(tmp_path, repeats=2)
    assert (tmp_path / ENCODER_ONNX).is_file() and (tmp_path / HEAD_ONNX).is_file()
    assert report.encoder_path == str(tmp_path / ENCODER_ONNX)
    assert report.encoder_max_abs_diff < 1e-4 and report.actions_max_abs_diff < 1e-4
    head = ort.InferenceSession(str(tmp_path / HEAD_ONNX), providers=["CPUExecutionProvider"])
    assert [i.name for i in head.get_inputs()] == ["features", "text"]  # the baseline reads no state
    eager = load_policy(tmp_path).infer(observation())
    onnx = load_policy(tmp_path, runtime="onnx").infer(observation())
    np.testing.assert_allclose(onnx.actions, eager.actions, atol=1e-4)
    assert onnx.stamp == eager.stamp and onnx.names == eager.names


@pytest.mark.parametrize("kind", list(PolicyKind))
def test_export_refuses_graphs_outside_the_tolerance(tmp_path, kind):
    ckpt = native_checkpoint() if kind is PolicyKind.NATIVE_VLA else tiny_checkpoint(tiny_config(kind))
    save_checkpoint(ckpt, tmp_path)
    with pytest.raises(ExportError, match="removed"):
        export_checkpoint(tmp_path, atol=0.0, rtol=0.0, repeats=1)
    assert not (tmp_path / ENCODER_ONNX).exists() and not (tmp_path / HEAD_ONNX).exists()


@pytest.mark.parametrize("kind", list(PolicyKind))
def test_onnx_runtime_without_export_is_a_clear_error(tmp_path, kind):
    save_checkpoint(tiny_checkpoint(tiny_config(kind)), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"vla_policy\.export"):
        load_policy(tmp_path, runtime="onnx")


def test_baseline_needs_both_graphs(tmp_path):
    save_checkpoint(tiny_checkpoint(tiny_config(PolicyKind.TEXTBOOK_BASELINE)), tmp_path)
    export_checkpoint(tmp_path, repeats=1)
    (tmp_path / ENCODER_ONNX).unlink()
    with pytest.raises(FileNotFoundError, match=ENCODER_ONNX):
        load_policy(tmp_path, runtime="onnx")


def test_saving_new_weights_removes_stale_graphs(tmp_path, capsys):
    ckpt = native_checkpoint()
    save_checkpoint(ckpt, tmp_path)
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / HEAD_ONNX}\n")
    save_checkpoint(ckpt, tmp_path)
    assert not (tmp_path / HEAD_ONNX).exists()
