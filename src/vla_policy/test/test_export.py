"""ONNX export of encoder and head, validated against eager; load_policy(runtime="onnx") gives the same chunks."""

from __future__ import annotations

import numpy as np
import pytest
from test_model import observation, tiny_checkpoint, tiny_config
from vla_policy.export import ExportError, export_checkpoint, main
from vla_policy.models import PolicyKind, load_policy, save_checkpoint
from vla_policy.models.checkpoint import ENCODER_ONNX, HEAD_ONNX


@pytest.mark.parametrize("kind", list(PolicyKind))
def test_onnx_policy_matches_eager(tmp_path, kind):
    ckpt = tiny_checkpoint(tiny_config(kind, discrete_head=kind is PolicyKind.NATIVE_VLA))
    save_checkpoint(ckpt, tmp_path)
    report = export_checkpoint(tmp_path, repeats=2)
    assert (tmp_path / ENCODER_ONNX).is_file() and (tmp_path / HEAD_ONNX).is_file()
    assert report.actions_max_abs_diff < 1e-4
    assert report.eager_ms > 0 and report.onnx_ms > 0
    eager = load_policy(tmp_path).infer(observation())
    onnx = load_policy(tmp_path, runtime="onnx").infer(observation())
    np.testing.assert_allclose(onnx.actions, eager.actions, atol=1e-4)
    assert onnx.stamp == eager.stamp and onnx.names == eager.names


def test_export_refuses_graphs_outside_the_tolerance(tmp_path):
    save_checkpoint(tiny_checkpoint(tiny_config()), tmp_path)
    with pytest.raises(ExportError, match="removed"):
        export_checkpoint(tmp_path, atol=0.0, rtol=0.0, repeats=1)
    assert not (tmp_path / ENCODER_ONNX).exists() and not (tmp_path / HEAD_ONNX).exists()


def test_onnx_runtime_without_export_is_a_clear_error(tmp_path):
    save_checkpoint(tiny_checkpoint(tiny_config()), tmp_path)
    with pytest.raises(FileNotFoundError, match=r"vla_policy\.export"):
        load_policy(tmp_path, runtime="onnx")


def test_saving_new_weights_removes_stale_graphs(tmp_path):
    ckpt = tiny_checkpoint(tiny_config())
    save_checkpoint(ckpt, tmp_path)
    assert main([str(tmp_path)]) == 0
    save_checkpoint(ckpt, tmp_path)
    assert not (tmp_path / HEAD_ONNX).exists()
