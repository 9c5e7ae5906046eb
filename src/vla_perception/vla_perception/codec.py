"""The one image codec: sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

`encode_compressed` / `decode_compressed` are the same JPEG/PNG coding for bytes that travel without a ROS
message (the policy's remote wire format uses them; no other module of ours encodes JPEG).

`image_to_numpy` returns a read-only zero-copy view into the message's buffer whenever the bytes can be
used as they are (native byte order); pass ``copy=True`` for an independent, writable array.
Single-channel encodings give HxW arrays (as cv_bridge does), multi-channel ones HxWxC.

This module never imports rclpy; it imports sensor_msgs only where it builds a message, so the bytes functions
(and the policy's wire format, and vla-serve) load no ROS message package.
"""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

if TYPE_CHECKING:
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CompressedImage, Image


class CodecError(ValueError):
    """A message or array that cannot be converted; the text says what is wrong."""


@dataclass(frozen=True)
class EncodingInfo:
    """How one ROS image encoding lays out a pixel."""

    dtype: np.dtype
    channels: int

    @property
    def pixel_bytes(self) -> int:
        return self.dtype.itemsize * self.channels


_U8, _U16, _F32 = np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32)

# Names follow sensor_msgs/image_encodings.hpp.
ENCODINGS: dict[str, EncodingInfo] = {
    "rgb8": EncodingInfo(_U8, 3),
    "bgr8": EncodingInfo(_U8, 3),
    "rgba8": EncodingInfo(_U8, 4),
    "bgra8": EncodingInfo(_U8, 4),
    "mono8": EncodingInfo(_U8, 1),
    "8UC1": EncodingInfo(_U8, 1),
    "8UC3": EncodingInfo(_U8, 3),
    "mono16": EncodingInfo(_U16, 1),
    "16UC1": EncodingInfo(_U16, 1),
    "32FC1": EncodingInfo(_F32, 1),
}

# Colour conversions to rgb8 for the encodings a camera may publish.
_TO_RGB: dict[str, int | None] = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "8UC1": cv2.COLOR_GRAY2RGB,
}

_NATIVE_BIG_ENDIAN = sys.byteorder == "big"


def encoding_info(encoding: str) -> EncodingInfo:
    """The pixel layout of a ROS image encoding; CodecError when it is not supported."""
    info = ENCODINGS.get(encoding)
    if info is None:
        raise CodecError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    return info


def image_to_numpy(msg: Image, copy: bool = False) -> np.ndarray:
    """sensor_msgs/Image -> HxWxC (or HxW for one channel) array in native byte order.

    Row padding (``step`` larger than a row) is skipped by strides, so the result is a view that
    shares the message's memory; it is read-only unless ``copy`` is true. Big-endian 16/32-bit data
    on a little-endian machine (or the reverse) is byte-swapped, which always copies.
    """
    info = encoding_info(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * info.pixel_bytes
    if height < 0 or width < 0:
        raise CodecError(f"image size must not be negative, got {height}x{width}")
    if step < row_bytes:
        raise CodecError(
            f"step {step} is shorter than one row of {width} {msg.encoding} pixels ({row_bytes} bytes)"
        )
    if step % info.dtype.itemsize:
        raise CodecError(
            f"step {step} is not a multiple of the {msg.encoding} element size {info.dtype.itemsize}"
        )
    expected = step * height
    if len(msg.data) != expected:
        raise CodecError(
            f"{msg.encoding} image {height}x{width} with step {step} needs {expected} bytes of data, got {len(msg.data)}"
        )
    dtype = info.dtype
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != _NATIVE_BIG_ENDIAN:
        dtype = dtype.newbyteorder()
    buffer = np.frombuffer(msg.data, dtype=np.uint8) if expected else np.zeros(0, np.uint8)
    shape: tuple[int, ...] = (height, width) if info.channels == 1 else (height, width, info.channels)
    strides: tuple[int, ...] = (step, info.pixel_bytes, dtype.itemsize)[: len(shape)]
    view = np.ndarray(shape=shape, dtype=dtype, buffer=buffer, strides=strides)
    if dtype != info.dtype:  # foreign byte order: swap into a native array
        return view.astype(info.dtype)
    if copy:
        return view.copy()
    view.flags.writeable = False
    return view


def image_to_rgb8(msg: Image) -> np.ndarray:
    """Any colour or 8-bit grey camera image -> HxWx3 uint8 RGB (a view when it already is rgb8)."""
    if msg.encoding not in _TO_RGB:
        raise CodecError(
            f"cannot convert {msg.encoding!r} to rgb8; colour/grey encodings are: {', '.join(_TO_RGB)}"
        )
    pixels = image_to_numpy(msg)
    code = _TO_RGB[msg.encoding]
    return pixels if code is None else cv2.cvtColor(pixels, code)


def _check_array(pixels: np.ndarray, encoding: str) -> np.ndarray:
    info = encoding_info(encoding)
    if not isinstance(pixels, np.ndarray):
        raise CodecError(f"expected a numpy array, got {type(pixels).__name__}")
    if info.channels == 1 and pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    expected_ndim = 2 if info.channels == 1 else 3
    if pixels.ndim != expected_ndim or (expected_ndim == 3 and pixels.shape[2] != info.channels):
        want = "HxW" if info.channels == 1 else f"HxWx{info.channels}"
        raise CodecError(f"{encoding} needs a {want} array, got shape {pixels.shape}")
    if pixels.dtype.kind != info.dtype.kind or pixels.dtype.itemsize != info.dtype.itemsize:
        raise CodecError(f"{encoding} needs dtype {info.dtype}, got {pixels.dtype}")
    return pixels


def numpy_to_image(
    pixels: np.ndarray, encoding: str = "rgb8", stamp: Time | None = None, frame_id: str = ""
) -> Image:
    """HxWxC (or HxW) array -> sensor_msgs/Image with a tight step (one copy into the message).

    The dtype must match the encoding (uint8 for *8, uint16 for mono16/16UC1, float32 for 32FC1);
    an array in non-native byte order is written as such and flagged by ``is_bigendian``.
    """
    pixels = _check_array(pixels, encoding)
    from sensor_msgs.msg import Image  # here, so the bytes functions need no ROS message package

    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    byteorder = pixels.dtype.byteorder
    msg.is_bigendian = int(byteorder == ">" or (byteorder == "=" and _NATIVE_BIG_ENDIAN))
    msg.step = msg.width * encoding_info(encoding).pixel_bytes
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels).reshape(-1).view(np.uint8))
    msg.data = data
    return msg


# --- CompressedImage -----------------------------------------------------------------------------

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMPRESSED_OUTPUTS = ("rgb8", "bgr8", "mono8", "mono16", "passthrough")


def _compression_of(msg: CompressedImage) -> str:
    """'jpeg' or 'png' from the format field (image_transport style "rgb8; jpeg compressed bgr8"
    or plain "jpeg"), falling back to the data's magic bytes when the field is empty."""
    fmt = msg.format.lower()
    for name, aliases in (("jpeg", ("jpeg", "jpg")), ("png", ("png",))):
        if any(alias in fmt for alias in aliases):
            return name
    if not fmt.strip():
        head = bytes(msg.data[:8])
        if head.startswith(_JPEG_MAGIC):
            return "jpeg"
        if head.startswith(_PNG_MAGIC):
            return "png"
        raise CodecError("CompressedImage has an empty format and its data is neither JPEG nor PNG")
    raise CodecError(f"unsupported CompressedImage format {msg.format!r}; supported: jpeg, png")


def compressed_to_numpy(msg: CompressedImage, desired_encoding: str = "rgb8") -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png) -> array in ``desired_encoding``.

    desired_encoding: rgb8 / bgr8 (HxWx3 uint8), mono8 (HxW uint8), mono16 (HxW uint16, 16-bit PNG), or
    passthrough (what the encoder stored: HxW for grey, HxWx3 BGR for colour, as OpenCV decodes it).
    """
    _check_desired(desired_encoding)
    return _decode(msg.data, desired_encoding, _compression_of(msg))


def decode_compressed(data: bytes | bytearray | memoryview, desired_encoding: str = "rgb8") -> np.ndarray:
    """JPEG or PNG bytes (recognised by their magic bytes) -> array in ``desired_encoding``.

    The same decoding as :func:`compressed_to_numpy`, for bytes that travel without a ROS message (the
    policy's remote wire format).
    """
    _check_desired(desired_encoding)
    head = bytes(data[:8])
    if head.startswith(_JPEG_MAGIC):
        compression = "jpeg"
    elif head.startswith(_PNG_MAGIC):
        compression = "png"
    else:
        raise CodecError("compressed image data is neither JPEG nor PNG")
    return _decode(data, desired_encoding, compression)


def _check_desired(desired_encoding: str) -> None:
    if desired_encoding not in COMPRESSED_OUTPUTS:
        raise CodecError(
            f"desired_encoding {desired_encoding!r} is not one of {', '.join(COMPRESSED_OUTPUTS)}"
        )


def _decode(data: Any, desired_encoding: str, compression: str) -> np.ndarray:
    if not len(data):
        raise CodecError(f"CompressedImage ({compression}) has no data")
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise CodecError(f"CompressedImage data could not be decoded as {compression} ({len(data)} bytes)")
    if desired_encoding == "passthrough":
        return decoded
    if desired_encoding == "mono16":
        if decoded.dtype != np.uint16 or decoded.ndim != 2:
            raise CodecError(f"mono16 needs a 16-bit grey {compression}, got {decoded.dtype} {decoded.shape}")
        return decoded
    if decoded.dtype != np.uint8:
        raise CodecError(f"{desired_encoding} needs an 8-bit {compression}, got {decoded.dtype}")
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    if desired_encoding == "mono8":
        codes = {1: None, 3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}
    elif desired_encoding == "bgr8":
        codes = {1: cv2.COLOR_GRAY2BGR, 3: None, 4: cv2.COLOR_BGRA2BGR}
    else:
        codes = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    code = codes.get(channels)
    return decoded if code is None else cv2.cvtColor(decoded, code)


_COMPRESSIBLE = {
    # encoding -> (conversion to what OpenCV encodes, name of what it stores)
    "rgb8": (cv2.COLOR_RGB2BGR, "bgr8"),
    "bgr8": (None, "bgr8"),
    "rgba8": (cv2.COLOR_RGBA2BGRA, "bgra8"),
    "bgra8": (None, "bgra8"),
    "mono8": (None, "mono8"),
    "mono16": (None, "mono16"),
    "16UC1": (None, "16UC1"),
}


def numpy_to_compressed(
    pixels: np.ndarray,
    encoding: str = "rgb8",
    compression: str = "jpeg",
    quality: int = 90,
    *,
    stamp: Time | None = None,
    frame_id: str = "",
) -> CompressedImage:
    """Array in ``encoding`` -> sensor_msgs/CompressedImage with an image_transport-style format field.

    jpeg takes 8-bit colour or grey (alpha is dropped); png also takes rgba8/bgra8 and 16-bit grey.
    ``quality`` is the JPEG quality (1-100) or, for png, ignored (OpenCV's default compression level).
    """
    encoded, stored = _encode(pixels, encoding, compression, quality)
    from sensor_msgs.msg import CompressedImage

    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = f"{encoding}; {compression} compressed {stored}"
    data = array.array("B")
    data.frombytes(encoded)
    msg.data = data
    return msg


def encode_compressed(
    pixels: np.ndarray, encoding: str = "rgb8", compression: str = "jpeg", quality: int = 90
) -> bytes:
    """Array in ``encoding`` -> JPEG or PNG bytes: the same encoding as :func:`numpy_to_compressed`, for
    images that travel without a ROS message (the policy's remote wire format)."""
    return _encode(pixels, encoding, compression, quality)[0]


def _encode(pixels: np.ndarray, encoding: str, compression: str, quality: int) -> tuple[bytes, str]:
    """-> (the encoded bytes, the encoding they store)."""
    if compression not in ("jpeg", "png"):
        raise CodecError(f"compression must be 'jpeg' or 'png', got {compression!r}")
    if encoding not in _COMPRESSIBLE:
        raise CodecError(f"cannot compress {encoding!r}; compressible encodings: {', '.join(_COMPRESSIBLE)}")
    if not 1 <= quality <= 100:
        raise CodecError(f"quality must be in 1..100, got {quality}")
    pixels = _check_array(pixels, encoding)
    code, stored = _COMPRESSIBLE[encoding]
    if compression == "jpeg" and pixels.dtype != np.uint8:
        raise CodecError(f"jpeg cannot hold {encoding}; use png for 16-bit images")
    if compression == "jpeg" and stored in ("bgra8",):
        code, stored = (cv2.COLOR_RGBA2BGR if encoding == "rgba8" else cv2.COLOR_BGRA2BGR), "bgr8"
    if pixels.dtype.byteorder == ">" or (pixels.dtype.byteorder == "=" and _NATIVE_BIG_ENDIAN):
        pixels = pixels.astype(pixels.dtype.newbyteorder("<"))
    converted = pixels if code is None else cv2.cvtColor(pixels, code)
    params: list[Any] = [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)] if compression == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if compression == "jpeg" else ".png", converted, params)
    if not ok:
        raise CodecError(f"OpenCV failed to encode a {pixels.shape} {encoding} image as {compression}")
    return encoded.tobytes(), stored
