"""Model-input preprocessing shared by training and inference, so the two cannot diverge.

A frame (HxWx3 uint8 RGB, as `codec.image_to_rgb8` and the dataset reader give it) goes through:
crop (optional; a fraction of each side, centred or random) -> resize (stretch, letterbox pad, or
cover-and-centre-crop) -> colour order -> scale to [0, 1] and normalise by mean/std -> layout.
numpy and OpenCV only: no torch, so the same function runs in the dataset loader and the policy node.
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import cv2
import numpy as np


class ResizeMode(enum.Enum):
    STRETCH = "stretch"  # straight to height x width, aspect ratio not kept
    PAD = "pad"  # keep aspect ratio, fit inside, pad the rest with pad_value (letterbox)
    COVER = "cover"  # keep aspect ratio, scale to cover, then centre-crop the overflow


class CropMode(enum.Enum):
    NONE = "none"
    CENTER = "center"
    RANDOM = "random"  # training augmentation; needs an rng, and at inference becomes CENTER


class ColorOrder(enum.Enum):
    RGB = "rgb"
    BGR = "bgr"


class Layout(enum.Enum):
    CHW = "chw"
    HWC = "hwc"


class OutputDType(enum.Enum):
    FLOAT32 = "float32"  # scaled to [0, 1], then (x - mean) / std
    UINT8 = "uint8"  # raw resized pixels; mean/std must be the identity


class Interpolation(enum.Enum):
    AREA = "area"
    LINEAR = "linear"
    CUBIC = "cubic"
    NEAREST = "nearest"


_CV_INTERPOLATION = {
    Interpolation.AREA: cv2.INTER_AREA,
    Interpolation.LINEAR: cv2.INTER_LINEAR,
    Interpolation.CUBIC: cv2.INTER_CUBIC,
    Interpolation.NEAREST: cv2.INTER_NEAREST,
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def json_ready(config: Any) -> dict[str, Any]:
    """A flat config dataclass as JSON-ready values: enums by value, tuples as lists (the ``to_dict`` of configs)."""
    out = asdict(config)
    for key, value in out.items():
        if isinstance(value, enum.Enum):
            out[key] = value.value
        elif isinstance(value, tuple):
            out[key] = list(value)
    return out


@dataclass(frozen=True)
class InputSpec:
    """What one model expects of one camera image. Stored with the model (``to_dict``/``from_dict``)."""

    height: int = 224
    width: int = 224
    resize: ResizeMode = ResizeMode.STRETCH
    crop: CropMode = CropMode.NONE
    crop_fraction: float = 1.0  # side fraction kept by the crop, before resizing (0.9 ~ OpenVLA's 81% area)
    color_order: ColorOrder = ColorOrder.RGB
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    dtype: OutputDType = OutputDType.FLOAT32
    layout: Layout = Layout.CHW
    interpolation: Interpolation = Interpolation.AREA
    pad_value: int = 0

    def __post_init__(self) -> None:
        for name, enum_type in (
            ("resize", ResizeMode),
            ("crop", CropMode),
            ("color_order", ColorOrder),
            ("dtype", OutputDType),
            ("layout", Layout),
            ("interpolation", Interpolation),
        ):
            value = getattr(self, name)
            if not isinstance(value, enum_type):
                try:  # accept the enum's value ("stretch") so specs load from YAML/JSON
                    object.__setattr__(self, name, enum_type(value))
                except ValueError:
                    allowed = ", ".join(m.value for m in enum_type)
                    raise ValueError(f"InputSpec.{name} must be one of {allowed}, got {value!r}") from None
        for name in ("height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"InputSpec.{name} must be a positive int, got {value!r}")
        if not (isinstance(self.crop_fraction, (int, float)) and 0.0 < self.crop_fraction <= 1.0):
            raise ValueError(f"InputSpec.crop_fraction must be in (0, 1], got {self.crop_fraction!r}")
        if self.crop is CropMode.NONE and self.crop_fraction != 1.0:
            raise ValueError("InputSpec.crop_fraction < 1 needs crop=center or crop=random")
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3 or not all(math.isfinite(v) for v in value):
                raise ValueError(
                    f"InputSpec.{name} must be 3 finite numbers (R, G, B), got {getattr(self, name)!r}"
                )
            object.__setattr__(self, name, value)
        if any(s <= 0.0 for s in self.std):
            raise ValueError(f"InputSpec.std must be positive, got {self.std}")
        if self.dtype is OutputDType.UINT8 and (self.mean != (0.0, 0.0, 0.0) or self.std != (1.0, 1.0, 1.0)):
            raise ValueError("InputSpec with dtype uint8 cannot normalise: leave mean=0 and std=1")
        if (
            isinstance(self.pad_value, bool)
            or not isinstance(self.pad_value, int)
            or not 0 <= self.pad_value <= 255
        ):
            raise ValueError(f"InputSpec.pad_value must be an int in 0..255, got {self.pad_value!r}")

    @property
    def output_shape(self) -> tuple[int, int, int]:
        if self.layout is Layout.CHW:
            return (3, self.height, self.width)
        return (self.height, self.width, 3)

    def for_inference(self) -> InputSpec:
        """The deterministic twin of a training spec: a random crop becomes the centred crop of the same size."""
        return replace(self, crop=CropMode.CENTER) if self.crop is CropMode.RANDOM else self

    def to_dict(self) -> dict[str, Any]:
        return json_ready(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown InputSpec keys {sorted(unknown)}; known: {sorted(known)}")
        values = dict(data)
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def _crop_box(
    height: int, width: int, spec: InputSpec, rng: np.random.Generator | None
) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) of the pre-resize crop."""
    if spec.crop is CropMode.NONE:
        return 0, 0, height, width
    crop_h = max(1, round(height * spec.crop_fraction))
    crop_w = max(1, round(width * spec.crop_fraction))
    if spec.crop is CropMode.CENTER:
        return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w
    if rng is None:
        raise ValueError("crop=random needs an rng (numpy Generator); at inference use spec.for_inference()")
    return int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1)), crop_h, crop_w


def _resize(frame: np.ndarray, spec: InputSpec) -> np.ndarray:
    height, width = frame.shape[:2]
    interpolation = _CV_INTERPOLATION[spec.interpolation]
    if spec.resize is ResizeMode.STRETCH:
        if (height, width) == (spec.height, spec.width):
            return frame
        return cv2.resize(frame, (spec.width, spec.height), interpolation=interpolation)
    if spec.resize is ResizeMode.PAD:
        scale = min(spec.height / height, spec.width / width)
    else:
        scale = max(spec.height / height, spec.width / width)
    new_h = max(1, round(height * scale))
    new_w = max(1, round(width * scale))
    if spec.resize is ResizeMode.PAD:
        new_h, new_w = min(new_h, spec.height), min(new_w, spec.width)
    else:
        new_h, new_w = max(new_h, spec.height), max(new_w, spec.width)
    scaled = (
        frame
        if (new_h, new_w) == (height, width)
        else cv2.resize(frame, (new_w, new_h), interpolation=interpolation)
    )
    if spec.resize is ResizeMode.COVER:
        top, left = (new_h - spec.height) // 2, (new_w - spec.width) // 2
        return scaled[top : top + spec.height, left : left + spec.width]
    canvas = np.full((spec.height, spec.width, 3), spec.pad_value, np.uint8)
    top, left = (spec.height - new_h) // 2, (spec.width - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = scaled
    return canvas


def preprocess(
    frame_rgb_uint8: np.ndarray, spec: InputSpec, rng: np.random.Generator | None = None
) -> np.ndarray:
    """One HxWx3 uint8 RGB frame -> the model's input array (``spec.output_shape``, C-contiguous).

    Deterministic unless ``spec.crop`` is RANDOM (then ``rng`` draws the crop). The input is never modified.
    """
    frame = frame_rgb_uint8
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        described = (
            f"{frame.dtype} array of shape {frame.shape}"
            if isinstance(frame, np.ndarray)
            else type(frame).__name__
        )
        raise ValueError(f"preprocess needs an HxWx3 uint8 RGB frame, got {described}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"preprocess got an empty frame of shape {frame.shape}")
    top, left, crop_h, crop_w = _crop_box(frame.shape[0], frame.shape[1], spec, rng)
    resized = _resize(frame[top : top + crop_h, left : left + crop_w], spec)
    if spec.color_order is ColorOrder.BGR:
        resized = resized[:, :, ::-1]
    if spec.dtype is OutputDType.FLOAT32:
        # One fused affine map per channel: x * (1 / (255 std)) - mean / std, in float32.
        std = np.asarray(spec.std, np.float64)
        scale = (1.0 / (255.0 * std)).astype(np.float32)
        offset = (np.asarray(spec.mean, np.float64) / std).astype(np.float32)
        if spec.color_order is ColorOrder.BGR:
            scale, offset = scale[::-1], offset[::-1]
        out = resized.astype(np.float32) * scale - offset
    else:
        out = resized
    if spec.layout is Layout.CHW:
        out = out.transpose(2, 0, 1)
    return np.ascontiguousarray(out)


def preprocess_batch(
    frames: np.ndarray | list[np.ndarray], spec: InputSpec, rng: np.random.Generator | None = None
) -> np.ndarray:
    """N frames -> N x ``spec.output_shape``; each frame goes through `preprocess` (same bytes as one by one)."""
    return np.stack([preprocess(frame, spec, rng) for frame in frames])
