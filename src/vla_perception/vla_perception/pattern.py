"""A synthetic, moving test pattern whose frame counter survives transport, so drops are visible.

The counter is drawn twice: as text for people, and as a strip of black/white blocks (32 bits, most
significant first) along the top-left edge for programs: `read_counter` decodes it from a received frame.
"""

from __future__ import annotations

import cv2
import numpy as np

COUNTER_BITS = 32


def _block_size(width: int, height: int) -> int:
    return max(2, min(16, width // COUNTER_BITS, height // 4))


def render_pattern(counter: int, width: int, height: int) -> np.ndarray:
    """Frame number ``counter`` of the pattern: HxWx3 uint8 RGB."""
    if width < 2 * COUNTER_BITS or height < 8:
        raise ValueError(f"the test pattern needs at least {2 * COUNTER_BITS}x8 pixels, got {width}x{height}")
    if not 0 <= counter < 2**COUNTER_BITS:
        raise ValueError(f"counter must fit in {COUNTER_BITS} bits, got {counter}")
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    frame = np.empty((height, width, 3), np.uint8)
    frame[:, :, 0] = x[None, :].astype(np.uint8)
    frame[:, :, 1] = y[:, None].astype(np.uint8)
    frame[:, :, 2] = 96
    # A bar that sweeps across in two seconds at 30 Hz, and a square that bounces vertically.
    bar_x = (counter * max(1, width // 60)) % width
    frame[:, bar_x : bar_x + max(2, width // 80)] = (255, 255, 0)
    side = max(4, height // 8)
    travel = max(1, height - side)
    square_y = abs((counter * 4) % (2 * travel) - travel)
    square_x = width // 2 - side // 2
    frame[square_y : square_y + side, square_x : square_x + side] = (255, 0, 255)
    block = _block_size(width, height)
    for bit in range(COUNTER_BITS):
        on = (counter >> (COUNTER_BITS - 1 - bit)) & 1
        frame[0:block, bit * block : (bit + 1) * block] = 255 if on else 0
    scale = max(0.4, height / 480)
    cv2.putText(
        frame,
        f"#{counter}",
        (block, block + int(40 * scale)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        max(1, int(2 * scale)),
        cv2.LINE_AA,
    )
    return frame


def read_counter(frame_rgb: np.ndarray) -> int:
    """The frame counter encoded in a test-pattern frame (RGB or BGR, uint8, at its rendered size)."""
    if frame_rgb.ndim != 3 or frame_rgb.dtype != np.uint8:
        raise ValueError(f"read_counter needs an HxWx3 uint8 frame, got {frame_rgb.dtype} {frame_rgb.shape}")
    height, width = frame_rgb.shape[:2]
    block = _block_size(width, height)
    centre = block // 2
    value = 0
    for bit in range(COUNTER_BITS):
        sample = frame_rgb[centre, bit * block + centre]
        value = (value << 1) | int(int(sample.mean()) > 127)
    return value
