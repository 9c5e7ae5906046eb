"""Per-feature statistics as LeRobot stores them: vectors, images (from histograms), per-episode -> dataset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vla_collector.lerobot.errors import DatasetError

STAT_NAMES = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension stats of an (N, D) array, as LeRobot stores them (count has shape (1,))."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if len(v) == 0:
        raise DatasetError("cannot compute statistics of an empty feature")
    stats = {
        "min": v.min(axis=0),
        "max": v.max(axis=0),
        "mean": v.mean(axis=0),
        "std": v.std(axis=0),
        "count": np.array([len(v)], dtype=np.int64),
    }
    for name, q in QUANTILES.items():
        stats[name] = np.quantile(v, q, axis=0)
    return stats


class ImageStatsAccumulator:
    """Exact per-channel stats of uint8 frames from 256-bin histograms (values scaled to 0..1).

    Frames are subsampled by 2 in each direction: the stats stay representative and the cost per frame is
    a few milliseconds even at 640x480.
    """

    def __init__(self) -> None:
        self._hist: np.ndarray | None = None
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        small = rgb[::2, ::2]
        channels = small.shape[2]
        if self._hist is None:
            self._hist = np.zeros((channels, 256), dtype=np.int64)
        for c in range(channels):
            self._hist[c] += np.bincount(small[..., c].ravel(), minlength=256)
        self.frames += 1

    def stats(self) -> dict[str, np.ndarray]:
        if self._hist is None:
            raise DatasetError("no frames: cannot compute image statistics")
        levels = np.arange(256, dtype=np.float64) / 255.0
        out: dict[str, list[float]] = {k: [] for k in STAT_NAMES if k != "count"}
        for hist in self._hist:
            total = hist.sum()
            nonzero = np.nonzero(hist)[0]
            mean = float((hist * levels).sum() / total)
            out["min"].append(float(levels[nonzero[0]]))
            out["max"].append(float(levels[nonzero[-1]]))
            out["mean"].append(mean)
            out["std"].append(float(np.sqrt((hist * (levels - mean) ** 2).sum() / total)))
            cdf = np.cumsum(hist) / total
            for name, q in QUANTILES.items():
                out[name].append(float(levels[min(int(np.searchsorted(cdf, q)), 255)]))
        stats = {k: np.asarray(v, dtype=np.float64).reshape(-1, 1, 1) for k, v in out.items()}
        stats["count"] = np.array([self.frames], dtype=np.int64)
        return stats


def aggregate_stats(
    per_episode: Sequence[Mapping[str, Mapping[str, np.ndarray]]],
) -> dict[str, dict[str, np.ndarray]]:
    """Combine per-episode stats like LeRobot: weighted means, pooled variance, weighted quantiles."""
    if not per_episode:
        return {}
    result: dict[str, dict[str, np.ndarray]] = {}
    for key in per_episode[0]:
        parts = [ep[key] for ep in per_episode if key in ep]
        counts = np.array([float(np.asarray(p["count"]).reshape(-1)[0]) for p in parts])
        weights = counts / counts.sum()

        def wsum(
            name: str, parts: list[Mapping[str, np.ndarray]] = parts, weights: np.ndarray = weights
        ) -> np.ndarray:
            return sum(w * np.asarray(p[name], dtype=np.float64) for w, p in zip(weights, parts, strict=True))

        mean = wsum("mean")
        variance = sum(
            w * (np.asarray(p["std"], dtype=np.float64) ** 2 + (np.asarray(p["mean"]) - mean) ** 2)
            for w, p in zip(weights, parts, strict=True)
        )
        agg = {
            "min": np.min(np.stack([np.asarray(p["min"], dtype=np.float64) for p in parts]), axis=0),
            "max": np.max(np.stack([np.asarray(p["max"], dtype=np.float64) for p in parts]), axis=0),
            "mean": mean,
            "std": np.sqrt(variance),
            "count": np.array([int(counts.sum())], dtype=np.int64),
        }
        for name in QUANTILES:
            if all(name in p for p in parts):
                agg[name] = wsum(name)
        result[key] = agg
    return result


def stats_to_json(stats: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    return {k: {s: np.asarray(v).tolist() for s, v in feat.items()} for k, feat in stats.items()}
