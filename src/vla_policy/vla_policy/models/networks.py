"""The native VLA (RT-1 style FiLM + TokenLearner, transformer, ACT/OFT-style chunked L1 head, optional
256-bin head) and the textbook baseline (pooled features, concatenation, MLP fusion, one action, MSE).

Both split into ``encode_images`` (the frozen trunk, whose output can be cached or exported on its own) and
``head(features, text, state)``. Inputs and outputs are normalized; the policy wrapper owns units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vla_policy.models.config import ModelConfig, PolicyKind
from vla_policy.models.encoders import ImageTrunk
from vla_policy.models.tokenizer import ActionTokenizer


class FiLM(nn.Module):
    """Feature-wise linear modulation by the instruction; starts as the identity (RT-1's initialisation)."""

    def __init__(self, text_dim: int, channels: int) -> None:
        super().__init__()
        self.to_scale_shift = nn.Linear(text_dim, 2 * channels)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        scale, shift = self.to_scale_shift(text).chunk(2, dim=-1)
        return x * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]


class FiLMBlock(nn.Module):
    """MBConv-like residual block (depthwise 3x3, pointwise 1x1) whose features are FiLM-modulated.

    Depthwise + pointwise instead of a dense 3x3 keeps the head cheap enough to train on 2 CPU cores.
    """

    def __init__(self, channels: int, text_dim: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.pointwise = nn.Conv2d(channels, channels, 1)
        self.norm = nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)
        self.film = FiLM(text_dim, channels)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return x + F.gelu(self.film(self.norm(self.pointwise(self.depthwise(x))), text))


class TokenLearner(nn.Module):
    """[B, C, h, w] -> [B, K, C]: K learned spatial attention maps pool the feature map (Ryoo et al. 2021)."""

    def __init__(self, channels: int, n_tokens: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv2d(channels, channels // 2, 1), nn.GELU(), nn.Conv2d(channels // 2, n_tokens, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.attention(x).flatten(2).softmax(dim=-1)  # [B, K, h*w]
        return torch.einsum("bkn,bcn->bkc", weights, x.flatten(2))


class NativeVLAHead(nn.Module):
    def __init__(self, config: ModelConfig, feature_hw: tuple[int, int]) -> None:
        super().__init__()
        d, n_cam = config.d_model, len(config.camera_names)
        self.config = config
        self.project = nn.Conv2d(config.image_channels, d, 1)
        self.position = nn.Parameter(
            torch.zeros(n_cam, d, *feature_hw)
        )  # per camera: also tells cameras apart
        nn.init.normal_(self.position, std=0.02)
        self.film_blocks = nn.ModuleList([FiLMBlock(d, config.text_dim) for _ in range(config.film_blocks)])
        self.token_learner = TokenLearner(d, config.tokens_per_camera)
        self.text_token = nn.Linear(config.text_dim, d)
        self.state_token = nn.Linear(config.state_dim, d)
        self.action_queries = nn.Parameter(torch.randn(config.horizon, d) * 0.02)
        self.type_embedding = nn.Parameter(torch.randn(4, d) * 0.02)  # text, state, image, action query
        layer = nn.TransformerEncoderLayer(
            d,
            config.n_heads,
            config.ff_dim,
            config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, config.n_layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(d)
        self.regression = nn.Linear(d, config.action_dim)
        self.bins = nn.Linear(d, config.action_dim * config.n_bins) if config.discrete_head else None

    def forward(
        self, features: torch.Tensor, text: torch.Tensor, state: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        b, n_cam = features.shape[:2]
        if self.config.state_dropout >= 1.0:
            state = torch.zeros_like(state)  # never trained with a state: the mean pose, always
        elif self.training and self.config.state_dropout > 0.0:
            keep = torch.rand(b, 1, device=state.device) >= self.config.state_dropout
            state = state * keep  # normalized 0 is the mean pose
        # All cameras in one pass: [B * n_cam, C, h, w]; the per-camera position embedding tells them apart.
        x = self.project(features.flatten(0, 1)).unflatten(0, (b, n_cam)) + self.position
        x = x.flatten(0, 1)
        camera_text = text.repeat_interleave(n_cam, dim=0)
        for block in self.film_blocks:
            x = block(x, camera_text)
        image_tokens = self.token_learner(x).unflatten(0, (b, n_cam)).flatten(1, 2)  # [B, n_cam * K, d]
        tokens = torch.cat(
            [
                (self.text_token(text) + self.type_embedding[0])[:, None],
                (self.state_token(state) + self.type_embedding[1])[:, None],
                image_tokens + self.type_embedding[2],
                (self.action_queries + self.type_embedding[3]).expand(b, -1, -1),
            ],
            dim=1,
        )
        out = self.out_norm(self.transformer(tokens)[:, -self.config.horizon :])
        result = {"actions": self.regression(out)}
        if self.bins is not None:
            result["logits"] = self.bins(out).unflatten(-1, (self.config.action_dim, self.config.n_bins))
        return result


class TextbookHead(nn.Module):
    """The seed chapters' VLAModel: mean-pooled image features ++ pooled instruction -> MLP -> one action."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fusion = nn.Sequential(
            nn.Linear(config.image_channels + config.text_dim, config.fusion_dim),
            nn.ReLU(),
            nn.Linear(config.fusion_dim, config.fusion_dim // 2),
        )
        self.action_decoder = nn.Sequential(
            nn.Linear(config.fusion_dim // 2, config.hidden_dim),
            nn.ReLU(),
            nn.Linear(config.hidden_dim, config.action_dim),
        )

    def forward(
        self, features: torch.Tensor, text: torch.Tensor, state: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        del state  # the textbook model sees no proprioception
        pooled = features.mean(dim=(-1, -2)).mean(dim=1)  # spatial mean, then mean over cameras
        fused = self.fusion(torch.cat([pooled, text], dim=-1))
        return {"actions": self.action_decoder(fused)[:, None]}


class VLANetwork(nn.Module):
    """Trunk + head for either kind; ``action_low``/``action_high`` bound the 256-bin tokenizer."""

    def __init__(self, config: ModelConfig, load_pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        self.trunk = ImageTrunk(config, load_pretrained=load_pretrained)
        with torch.no_grad():
            probe = self.trunk(torch.zeros(1, 3, config.image_height, config.image_width))
        self.feature_shape = tuple(probe.shape[1:])  # (C, h, w)
        self.head: nn.Module
        if config.kind is PolicyKind.NATIVE_VLA:
            self.head = NativeVLAHead(config, (probe.shape[2], probe.shape[3]))
        else:
            self.head = TextbookHead(config)
        self.register_buffer("action_low", torch.full((config.action_dim,), -3.0))
        self.register_buffer("action_high", torch.full((config.action_dim,), 3.0))

    def set_action_bounds(self, low: torch.Tensor, high: torch.Tensor) -> None:
        self.action_low.copy_(torch.as_tensor(low, dtype=torch.float32))
        self.action_high.copy_(torch.as_tensor(high, dtype=torch.float32))

    @property
    def tokenizer(self) -> ActionTokenizer:
        return ActionTokenizer(self.action_low, self.action_high, self.config.n_bins)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, n_cam, 3, H, W] -> [B, n_cam, C, h, w]."""
        b, n_cam = images.shape[:2]
        return self.trunk(images.flatten(0, 1)).unflatten(0, (b, n_cam))

    def forward(
        self, images: torch.Tensor, text: torch.Tensor, state: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return self.head(self.encode_images(images), text, state)

    def loss(
        self, outputs: dict[str, torch.Tensor], target: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Target [B, H, D] normalized; ``valid`` [B, H] masks steps past an episode's end (all valid if None).

        Native: L1 (+ weighted cross-entropy on bins); baseline: MSE (its single step always exists).
        """
        pred = outputs["actions"]
        if self.config.kind is PolicyKind.TEXTBOOK_BASELINE:
            loss = F.mse_loss(pred, target)
            return loss, {"mse": float(loss.detach())}
        weight = torch.ones(target.shape[:2], device=target.device) if valid is None else valid.float()
        count = weight.sum().clamp(min=1.0)
        l1 = ((pred - target).abs().mean(dim=-1) * weight).sum() / count
        parts = {"l1": float(l1.detach())}
        loss = l1
        if "logits" in outputs:
            tokens = self.tokenizer.encode(target)
            ce_each = F.cross_entropy(outputs["logits"].flatten(0, 2), tokens.flatten(), reduction="none")
            ce = (ce_each.view(target.shape).mean(dim=-1) * weight).sum() / count
            parts["bin_ce"] = float(ce.detach())
            loss = loss + self.config.discrete_loss_weight * ce
        return loss, parts

    def decode_bins(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if "logits" not in outputs:
            raise ValueError("this model has no discrete head (config.discrete_head is false)")
        return self.tokenizer.decode(outputs["logits"].argmax(dim=-1))
