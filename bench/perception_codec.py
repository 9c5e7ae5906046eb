"""Cost of the image codec per frame, for each encoding, against a plain numpy copy of the same bytes.

For a 640x480 frame in each encoding: numpy_to_image (array -> message, one copy), image_to_numpy (message
-> array: a zero-copy view), image_to_numpy(copy=True), a padded-step message (strided view) and, for
colour encodings, image_to_rgb8 (what the policy node calls); plus jpeg/png CompressedImage both ways.
Times are the best of several repeats (the machine is shared), in microseconds per frame.

Usage: python bench/perception_codec.py [--quick] [--width W] [--height H]
The last line of output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import array
import json
import time
from collections.abc import Callable

import numpy as np
from sensor_msgs.msg import Image
from vla_perception.codec import (
    ENCODINGS,
    compressed_to_numpy,
    image_to_numpy,
    image_to_rgb8,
    numpy_to_compressed,
    numpy_to_image,
)
from vla_perception.pattern import render_pattern

COLOUR = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")


def best_us(fn: Callable[[], object], number: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def sample(encoding: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    info = ENCODINGS[encoding]
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if info.dtype == np.float32:
        return rng.random(shape, dtype=np.float32)
    return rng.integers(0, np.iinfo(info.dtype).max, size=shape, dtype=info.dtype)


def padded(pixels: np.ndarray, encoding: str, pad: int = 64) -> Image:
    rows = pixels.reshape(pixels.shape[0], -1).view(np.uint8)
    buffer = np.zeros((rows.shape[0], rows.shape[1] + pad), np.uint8)
    buffer[:, : rows.shape[1]] = rows
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding, step=buffer.shape[1])
    msg.data = array.array("B", buffer.tobytes())
    return msg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args()
    number, repeats = (5, 3) if args.quick else (20, 7)
    rng = np.random.default_rng(0)
    rows = []
    for encoding in ENCODINGS:
        pixels = sample(encoding, args.height, args.width, rng)
        msg = numpy_to_image(pixels, encoding)
        padded_msg = padded(pixels, encoding)
        row = {
            "encoding": encoding,
            "bytes": pixels.nbytes,
            "numpy_copy_us": best_us(pixels.copy, number, repeats),
            "to_image_us": best_us(lambda p=pixels, e=encoding: numpy_to_image(p, e), number, repeats),
            "to_numpy_view_us": best_us(lambda m=msg: image_to_numpy(m), number * 10, repeats),
            "to_numpy_copy_us": best_us(lambda m=msg: image_to_numpy(m, copy=True), number, repeats),
            "padded_view_us": best_us(lambda m=padded_msg: image_to_numpy(m), number * 10, repeats),
        }
        if encoding in COLOUR:
            row["to_rgb8_us"] = best_us(lambda m=msg: image_to_rgb8(m), number, repeats)
        rows.append(row)
    rgb = render_pattern(12345, args.width, args.height)  # a picture, not noise: realistic compression
    compressed = {}
    for compression in ("jpeg", "png"):
        msg = numpy_to_compressed(rgb, "rgb8", compression)
        compressed[compression] = {
            "bytes": len(msg.data),
            "encode_us": best_us(lambda c=compression: numpy_to_compressed(rgb, "rgb8", c), number, repeats),
            "decode_us": best_us(lambda m=msg: compressed_to_numpy(m), number, repeats),
            "numpy_copy_us": best_us(rgb.copy, number, repeats),
        }

    print(
        f"codec cost per {args.width}x{args.height} frame, microseconds (best of {repeats}); x = multiple of a numpy copy"
    )
    header = f"{'encoding':<8} {'bytes':>8} {'np.copy':>8} {'to_image':>14} {'view':>8} {'padded':>8} {'copy':>14} {'to_rgb8':>14}"
    print(header)
    for r in rows:
        base = r["numpy_copy_us"]
        rgb8 = (
            f"{r['to_rgb8_us']:8.1f} ({r['to_rgb8_us'] / base:3.1f}x)" if "to_rgb8_us" in r else f"{'-':>14}"
        )
        print(
            f"{r['encoding']:<8} {r['bytes']:>8} {base:8.1f} {r['to_image_us']:8.1f} ({r['to_image_us'] / base:3.1f}x) "
            f"{r['to_numpy_view_us']:8.1f} {r['padded_view_us']:8.1f} "
            f"{r['to_numpy_copy_us']:8.1f} ({r['to_numpy_copy_us'] / base:3.1f}x) {rgb8}"
        )
    for name, c in compressed.items():
        print(
            f"{name:<8} {c['bytes']:>8} {c['numpy_copy_us']:8.1f}  encode {c['encode_us']:8.1f} "
            f"({c['encode_us'] / c['numpy_copy_us']:.0f}x)  decode {c['decode_us']:8.1f} ({c['decode_us'] / c['numpy_copy_us']:.0f}x)"
        )
    print(
        json.dumps(
            {
                "bench": "perception_codec",
                "width": args.width,
                "height": args.height,
                "encodings": {r["encoding"]: {k: v for k, v in r.items() if k != "encoding"} for r in rows},
                "compressed": compressed,
            }
        )
    )


if __name__ == "__main__":
    main()
