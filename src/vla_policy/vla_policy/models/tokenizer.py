"""RT-2/OpenVLA-style action tokenizer: each action dimension to one of ``n_bins`` uniform bins.

Bins span per-dimension bounds (in normalized action units, from the dataset's min/max). ``encode`` clips
into the bounds, so every token is in ``0..n_bins-1``; ``decode`` returns bin centres, so every decoded
action is inside the bounds.
"""

from __future__ import annotations

import torch


class ActionTokenizer:
    def __init__(self, low: torch.Tensor, high: torch.Tensor, n_bins: int = 256) -> None:
        low = torch.as_tensor(low, dtype=torch.float32)
        high = torch.as_tensor(high, dtype=torch.float32)
        if low.ndim != 1 or low.shape != high.shape:
            raise ValueError(f"low and high must be 1-d of the same length, got {low.shape} and {high.shape}")
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ValueError("tokenizer bounds must be finite")
        if n_bins < 2:
            raise ValueError("n_bins must be at least 2")
        # A constant dimension still gets a non-empty range so the bin width is positive.
        high = torch.maximum(high, low + 1e-6)
        self.low, self.high, self.n_bins = low, high, int(n_bins)

    @property
    def bin_width(self) -> torch.Tensor:
        return (self.high - self.low) / self.n_bins

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """[..., D] float -> [..., D] int64 in 0..n_bins-1 (NaN maps to the middle bin)."""
        low, high = self.low.to(actions.device), self.high.to(actions.device)
        x = torch.nan_to_num(actions.float(), nan=0.0)
        x = torch.minimum(torch.maximum(x, low), high)
        idx = torch.floor((x - low) / (high - low) * self.n_bins).long()
        idx = torch.where(torch.isnan(actions), torch.full_like(idx, self.n_bins // 2), idx)
        return idx.clamp(0, self.n_bins - 1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """[..., D] int -> [..., D] float bin centres, always within [low, high]."""
        low, high = self.low.to(tokens.device), self.high.to(tokens.device)
        idx = tokens.long().clamp(0, self.n_bins - 1).float()
        return low + (idx + 0.5) * (high - low) / self.n_bins
