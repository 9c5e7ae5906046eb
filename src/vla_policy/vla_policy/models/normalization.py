"""Per-feature normalization statistics (mean/std/min/max of ``observation.state`` and ``action``).

Stored in the checkpoint as ``normalization.json`` and inside the embodiment manifest (hashed), so a model
can never be run with another dataset's statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from vla_common.features import ACTION_KEY, STATE_KEY

MIN_STD = 1e-3  # a joint that never moved (or a fixed gripper) must not blow up to inf


@dataclass(frozen=True)
class FeatureStats:
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray

    def __post_init__(self) -> None:
        arrays = {
            k: np.asarray(getattr(self, k), dtype=np.float64).reshape(-1)
            for k in ("mean", "std", "min", "max")
        }
        sizes = {a.size for a in arrays.values()}
        if len(sizes) != 1:
            raise ValueError(
                f"statistics have mismatched lengths: { {k: a.size for k, a in arrays.items()} }"
            )
        for key, arr in arrays.items():
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"statistic {key} holds NaN or inf")
            arr.setflags(write=False)
            object.__setattr__(self, key, arr)

    @classmethod
    def of(cls, values: np.ndarray) -> FeatureStats:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] == 0:
            raise ValueError(f"need [N>0, D] values, got {values.shape}")
        return cls(values.mean(0), values.std(0), values.min(0), values.max(0))

    @property
    def safe_std(self) -> np.ndarray:
        return np.maximum(self.std, MIN_STD)

    def to_dict(self) -> dict[str, list[float]]:
        return {k: getattr(self, k).tolist() for k in ("mean", "std", "min", "max")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureStats:
        try:
            return cls(*(np.asarray(data[k], dtype=np.float64) for k in ("mean", "std", "min", "max")))
        except KeyError as e:
            raise ValueError(f"normalization statistics lack {e.args[0]!r}") from None


@dataclass(frozen=True)
class Normalizer:
    state: FeatureStats
    action: FeatureStats

    def normalize_state(self, state: torch.Tensor) -> torch.Tensor:
        return (state - _t(self.state.mean, state)) / _t(self.state.safe_std, state)

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return (action - _t(self.action.mean, action)) / _t(self.action.safe_std, action)

    def unnormalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return action * _t(self.action.safe_std, action) + _t(self.action.mean, action)

    def action_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized min/max of the actions: the range of the 256-bin tokenizer."""
        low = (self.action.min - self.action.mean) / self.action.safe_std
        high = (self.action.max - self.action.mean) / self.action.safe_std
        return torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)

    def to_dict(self) -> dict[str, dict[str, list[float]]]:
        return {STATE_KEY: self.state.to_dict(), ACTION_KEY: self.action.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> Normalizer:
        missing = {STATE_KEY, ACTION_KEY} - set(data)
        if missing:
            raise ValueError(f"normalization statistics lack features {sorted(missing)}")
        return cls(FeatureStats.from_dict(data[STATE_KEY]), FeatureStats.from_dict(data[ACTION_KEY]))


def _t(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values.copy(), dtype=like.dtype, device=like.device)  # stats arrays are read-only
