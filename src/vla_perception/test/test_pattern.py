"""The test pattern: counters survive encoding, the picture moves."""

import cv2
import numpy as np
import pytest
from vla_perception.codec import compressed_to_numpy, numpy_to_compressed
from vla_perception.pattern import read_counter, render_pattern


@pytest.mark.parametrize(("width", "height"), [(64, 8), (160, 120), (640, 480), (1280, 720)])
def test_counter_round_trip_at_sizes(width, height):
    for counter in (0, 1, 2, 255, 256, 65_537, 2**32 - 1):
        frame = render_pattern(counter, width, height)
        assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
        assert read_counter(frame) == counter


def test_counter_survives_jpeg():
    frame = render_pattern(123_456, 640, 480)
    decoded = compressed_to_numpy(numpy_to_compressed(frame, "rgb8", "jpeg", quality=75))
    assert read_counter(decoded) == 123_456


def test_counter_reads_from_bgr_too():
    frame = render_pattern(4242, 320, 240)
    assert read_counter(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)) == 4242


def test_pattern_moves():
    assert not np.array_equal(render_pattern(10, 320, 240)[20:], render_pattern(11, 320, 240)[20:])


def test_bad_sizes_and_counters():
    with pytest.raises(ValueError, match="at least"):
        render_pattern(0, 32, 32)
    with pytest.raises(ValueError, match="fit in 32 bits"):
        render_pattern(2**32, 640, 480)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        read_counter(np.zeros((8, 8), np.uint8))
