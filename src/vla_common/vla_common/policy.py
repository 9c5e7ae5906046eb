"""The one interface every policy backend (native, Hugging Face, remote) and ``load_policy`` implement.

It lives in the bottom package because the runtime path (the policy node, its executor, every backend, the
remote wire format, ``vla-serve``) and the training / evaluation code all speak it. The only module of
``vla_common`` that imports numpy (an action chunk is an array).

An observation is a dict keyed like a dataset's features:
``observation.images.<camera>`` -> HxWx3 uint8 RGB, ``observation.state`` -> float array in the
manifest's joint order and units, ``task`` -> the instruction string; optionally ``timestamp`` (seconds,
the time the observation was taken; ROS time in the node, sim time in evaluation).

``infer`` returns an :class:`ActionChunk`: H future actions in the dataset's units (un-normalized), with the
stamp of the observation they were computed from, so an executor can drop steps already in the past and
blend overlapping chunks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

Observation = Mapping[str, Any]


@dataclass(frozen=True)
class ActionChunk:
    """``actions[k]`` is meant for time ``stamp + k * dt`` (seconds)."""

    actions: np.ndarray  # [H, D] float, dataset units
    names: tuple[str, ...]  # D action names, the manifest's action_names
    stamp: float  # observation time the chunk was computed from, seconds
    dt: float  # period between consecutive actions, seconds (1 / dataset fps)

    def __post_init__(self) -> None:
        actions = np.asarray(self.actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] < 1:
            raise ValueError(f"actions must be [H>=1, D], got shape {actions.shape}")
        if actions.shape[1] != len(self.names):
            raise ValueError(f"{actions.shape[1]} action dims but {len(self.names)} names")
        if not np.all(np.isfinite(actions)):
            raise ValueError("action chunk holds NaN or inf")
        if not (math.isfinite(self.dt) and self.dt > 0):
            raise ValueError(f"dt must be positive, got {self.dt}")
        if not math.isfinite(self.stamp):
            raise ValueError(f"stamp must be finite, got {self.stamp}")
        actions.setflags(write=False)
        object.__setattr__(self, "actions", actions)
        object.__setattr__(self, "names", tuple(self.names))

    @property
    def horizon(self) -> int:
        return int(self.actions.shape[0])

    def times(self) -> np.ndarray:
        """The time each action is meant for."""
        return self.stamp + self.dt * np.arange(self.horizon)


@runtime_checkable
class Policy(Protocol):
    """What ``load_policy`` returns and what every backend of the policy node implements."""

    def reset(self) -> None:
        """Forget episode state (caches, history) before a new episode or instruction."""

    def infer(self, observation: Observation) -> ActionChunk:
        """Compute the next action chunk for one observation (batch 1)."""
        ...
