"""The real instruction encoder: all-MiniLM-L6-v2 from its PyPI package, offline, frozen, cached."""

from __future__ import annotations

import pytest
import torch
from vla_policy.models import ModelConfig, PolicyKind
from vla_policy.models.encoders import InstructionEncoder


@pytest.fixture(scope="module")
def minilm() -> InstructionEncoder:
    cfg = ModelConfig(kind=PolicyKind.NATIVE_VLA, camera_names=("front",), state_dim=8, action_dim=8)
    return InstructionEncoder(cfg)


def test_minilm_embeds_paraphrases_close_and_other_tasks_far(minilm, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    emb = minilm(["pick up the red block", "grab the red cube", "open the drawer"])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3), atol=1e-4, rtol=0)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.2


def test_minilm_caches_one_embedding_per_instruction(minilm):
    before = minilm.cache_size
    a = minilm(["put the red block on the blue block"] * 3)
    assert minilm.cache_size == before + 1
    assert torch.equal(a[0], a[2])
