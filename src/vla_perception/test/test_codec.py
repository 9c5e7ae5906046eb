"""Round trips and rejections of the one image codec (no rclpy needed)."""

import array
import sys

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CompressedImage, Image
from vla_perception.codec import (
    ENCODINGS,
    CodecError,
    compressed_to_numpy,
    decode_compressed,
    encode_compressed,
    encoding_info,
    image_to_numpy,
    image_to_rgb8,
    numpy_to_compressed,
    numpy_to_image,
)

RNG = np.random.default_rng(7)


def random_pixels(encoding: str, height: int = 5, width: int = 7) -> np.ndarray:
    info = encoding_info(encoding)
    shape = (height, width) if info.channels == 1 else (height, width, info.channels)
    if info.dtype == np.float32:
        return RNG.normal(size=shape).astype(np.float32)
    return RNG.integers(0, np.iinfo(info.dtype).max, size=shape, endpoint=True).astype(info.dtype)


def padded_message(pixels: np.ndarray, encoding: str, pad: int, big_endian: bool = False) -> Image:
    """Build an Image by hand, the way a driver with row alignment would."""
    dtype = pixels.dtype.newbyteorder(">" if big_endian else "<")
    rows = pixels.astype(dtype).reshape(pixels.shape[0], -1).view(np.uint8)
    padded = np.concatenate([rows, np.full((rows.shape[0], pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding)
    msg.is_bigendian = int(big_endian)
    msg.step = padded.shape[1]
    msg.data = array.array("B", padded.tobytes())
    return msg


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_round_trip_every_encoding(encoding):
    pixels = random_pixels(encoding)
    stamp = Time(sec=12, nanosec=345)
    msg = numpy_to_image(pixels, encoding, stamp=stamp, frame_id="cam")
    assert msg.header.stamp == stamp and msg.header.frame_id == "cam"
    assert msg.step == pixels.shape[1] * encoding_info(encoding).pixel_bytes
    assert len(msg.data) == msg.step * msg.height
    back = image_to_numpy(msg)
    assert back.dtype == pixels.dtype and back.shape == pixels.shape
    np.testing.assert_array_equal(back, pixels)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_padded_step_every_encoding(encoding):
    pixels = random_pixels(encoding)
    pad = 4 * encoding_info(encoding).dtype.itemsize
    msg = padded_message(pixels, encoding, pad, big_endian=sys.byteorder == "big")
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


@pytest.mark.parametrize("encoding", ["mono16", "16UC1", "32FC1"])
def test_foreign_byte_order_is_swapped(encoding):
    pixels = random_pixels(encoding)
    foreign = sys.byteorder == "little"
    msg = padded_message(pixels, encoding, pad=0, big_endian=foreign)
    back = image_to_numpy(msg)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, pixels)


def test_big_endian_mono16_padded_known_bytes():
    # 2x2 mono16, big endian, 2 bytes of padding per row: values 0x0102 0x0304 / 0x0506 0x0708.
    msg = Image(height=2, width=2, encoding="mono16", is_bigendian=1, step=6)
    msg.data = array.array("B", [1, 2, 3, 4, 0, 0, 5, 6, 7, 8, 0, 0])
    np.testing.assert_array_equal(image_to_numpy(msg), [[0x0102, 0x0304], [0x0506, 0x0708]])


def test_numpy_to_image_keeps_big_endian_arrays_as_they_are():
    pixels = np.array([[0x0102, 0x0304]], dtype=">u2")
    msg = numpy_to_image(pixels, "mono16")
    assert msg.is_bigendian == 1 and bytes(msg.data) == b"\x01\x02\x03\x04"
    np.testing.assert_array_equal(image_to_numpy(msg), [[0x0102, 0x0304]])


def test_view_is_zero_copy_and_read_only():
    msg = numpy_to_image(random_pixels("rgb8", 4, 6), "rgb8")
    view = image_to_numpy(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    assert not view.flags.writeable
    msg.data[0] = (msg.data[0] + 1) % 256  # the view sees the message's own bytes
    assert view[0, 0, 0] == msg.data[0]
    copied = image_to_numpy(msg, copy=True)
    assert copied.flags.writeable and not np.shares_memory(copied, view)


def test_padded_view_is_still_zero_copy():
    pixels = random_pixels("bgr8")
    msg = padded_message(pixels, "bgr8", pad=5)
    view = image_to_numpy(msg)
    assert np.shares_memory(view, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(view, pixels)


def test_mono_accepts_hxwx1():
    pixels = random_pixels("mono8")
    np.testing.assert_array_equal(image_to_numpy(numpy_to_image(pixels[:, :, None], "mono8")), pixels)


def test_non_contiguous_input_is_written_tightly():
    pixels = random_pixels("rgb8", 6, 10)[:, ::2]
    msg = numpy_to_image(pixels, "rgb8")
    assert msg.step == 5 * 3
    np.testing.assert_array_equal(image_to_numpy(msg), pixels)


@pytest.mark.parametrize(
    ("source", "convert"),
    [
        ("rgb8", lambda p: p),
        ("bgr8", lambda p: p[:, :, ::-1]),
        ("rgba8", lambda p: np.concatenate([p, np.full((*p.shape[:2], 1), 9, np.uint8)], axis=2)),
        ("bgra8", lambda p: np.concatenate([p[:, :, ::-1], np.zeros((*p.shape[:2], 1), np.uint8)], axis=2)),
    ],
)
def test_image_to_rgb8(source, convert):
    rgb = random_pixels("rgb8")
    np.testing.assert_array_equal(
        image_to_rgb8(numpy_to_image(np.ascontiguousarray(convert(rgb)), source)), rgb
    )


def test_image_to_rgb8_from_mono_and_rejects_depth():
    grey = random_pixels("mono8")
    np.testing.assert_array_equal(image_to_rgb8(numpy_to_image(grey, "mono8")), np.stack([grey] * 3, axis=2))
    with pytest.raises(CodecError, match="cannot convert '32FC1' to rgb8"):
        image_to_rgb8(numpy_to_image(random_pixels("32FC1"), "32FC1"))


# --- bad messages, one named test each ---------------------------------------------------------------


def test_bad_unknown_encoding():
    msg = Image(height=1, width=1, encoding="yuv422_weird", step=2, data=[0, 0])
    with pytest.raises(CodecError, match="unsupported image encoding 'yuv422_weird'"):
        image_to_numpy(msg)


def test_bad_empty_encoding():
    with pytest.raises(CodecError, match="unsupported image encoding ''"):
        image_to_numpy(Image(height=1, width=1, step=3, data=[0, 0, 0]))


def test_bad_step_shorter_than_row():
    msg = Image(height=2, width=4, encoding="rgb8", step=10, data=[0] * 20)
    with pytest.raises(CodecError, match="step 10 is shorter than one row"):
        image_to_numpy(msg)


def test_bad_step_not_multiple_of_element_size():
    msg = Image(height=2, width=2, encoding="mono16", step=5, data=[0] * 10)
    with pytest.raises(CodecError, match="not a multiple"):
        image_to_numpy(msg)


def test_bad_short_data():
    msg = Image(height=2, width=2, encoding="rgb8", step=6, data=[0] * 11)
    with pytest.raises(CodecError, match="needs 12 bytes of data, got 11"):
        image_to_numpy(msg)


def test_bad_long_data():
    msg = Image(height=2, width=2, encoding="rgb8", step=6, data=[0] * 13)
    with pytest.raises(CodecError, match="needs 12 bytes of data, got 13"):
        image_to_numpy(msg)


def test_codec_error_is_a_value_error():
    assert issubclass(CodecError, ValueError)


def test_bad_array_dtype_for_encoding():
    with pytest.raises(CodecError, match="rgb8 needs dtype uint8, got float64"):
        numpy_to_image(np.zeros((2, 2, 3)), "rgb8")


def test_bad_array_channels_for_encoding():
    with pytest.raises(CodecError, match=r"rgba8 needs a HxWx4 array, got shape \(2, 2, 3\)"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgba8")


def test_bad_array_unknown_encoding():
    with pytest.raises(CodecError, match="unsupported image encoding"):
        numpy_to_image(np.zeros((2, 2, 3), np.uint8), "rgb9")


def test_empty_image_round_trips():
    msg = numpy_to_image(np.zeros((0, 4, 3), np.uint8), "rgb8")
    assert image_to_numpy(msg).shape == (0, 4, 3)


# --- CompressedImage ---------------------------------------------------------------------------------


def smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=2).astype(np.uint8)


def test_png_round_trip_is_exact_for_each_encoding():
    for encoding in ("rgb8", "bgr8", "mono8"):
        pixels = random_pixels(encoding, 16, 20)
        msg = numpy_to_compressed(pixels, encoding, "png", frame_id="f")
        assert msg.format == f"{encoding}; png compressed {'mono8' if encoding == 'mono8' else 'bgr8'}"
        np.testing.assert_array_equal(compressed_to_numpy(msg, encoding), pixels)


def test_png_mono16_and_rgba_round_trip():
    depth = random_pixels("mono16", 8, 9)
    np.testing.assert_array_equal(
        compressed_to_numpy(numpy_to_compressed(depth, "mono16", "png"), "mono16"), depth
    )
    rgba = random_pixels("rgba8", 8, 9)
    decoded = compressed_to_numpy(numpy_to_compressed(rgba, "rgba8", "png"), "passthrough")
    np.testing.assert_array_equal(decoded, rgba[:, :, [2, 1, 0, 3]])  # OpenCV keeps BGRA


def test_jpeg_round_trip_is_close_and_colour_order_right():
    rgb = smooth_rgb()
    msg = numpy_to_compressed(rgb, "rgb8", "jpeg", quality=95, stamp=Time(sec=3))
    assert msg.format == "rgb8; jpeg compressed bgr8" and msg.header.stamp.sec == 3
    assert bytes(msg.data[:3]) == b"\xff\xd8\xff"
    back = compressed_to_numpy(msg)
    assert back.shape == rgb.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - rgb).mean() < 3.0
    bgr = compressed_to_numpy(msg, "bgr8")
    np.testing.assert_array_equal(bgr, back[:, :, ::-1])


def test_compressed_plain_format_and_empty_format_are_sniffed():
    rgb = smooth_rgb()
    msg = numpy_to_compressed(rgb, "rgb8", "png")
    msg.format = "png"
    np.testing.assert_array_equal(compressed_to_numpy(msg), rgb)
    msg.format = ""
    np.testing.assert_array_equal(compressed_to_numpy(msg), rgb)


def test_compressed_to_mono8_from_colour():
    msg = numpy_to_compressed(smooth_rgb(), "rgb8", "png")
    assert compressed_to_numpy(msg, "mono8").shape == (48, 64)


def test_bad_compressed_unknown_format():
    msg = CompressedImage(format="h264", data=[0, 0, 0, 1])
    with pytest.raises(CodecError, match="unsupported CompressedImage format 'h264'"):
        compressed_to_numpy(msg)


def test_bad_compressed_corrupt_data():
    msg = CompressedImage(format="jpeg", data=[0xFF, 0xD8, 0xFF, 0, 1, 2, 3])
    with pytest.raises(CodecError, match="could not be decoded as jpeg"):
        compressed_to_numpy(msg)


def test_bad_compressed_empty_data():
    with pytest.raises(CodecError, match="has no data"):
        compressed_to_numpy(CompressedImage(format="png"))


def test_bad_compressed_empty_format_unknown_bytes():
    with pytest.raises(CodecError, match="neither JPEG nor PNG"):
        compressed_to_numpy(CompressedImage(format="", data=[1, 2, 3, 4]))


def test_bad_compressed_requests():
    with pytest.raises(CodecError, match="jpeg cannot hold mono16"):
        numpy_to_compressed(random_pixels("mono16"), "mono16", "jpeg")
    with pytest.raises(CodecError, match="compression must be"):
        numpy_to_compressed(smooth_rgb(), "rgb8", "webp")
    with pytest.raises(CodecError, match="cannot compress '32FC1'"):
        numpy_to_compressed(random_pixels("32FC1"), "32FC1", "png")
    with pytest.raises(CodecError, match="desired_encoding"):
        compressed_to_numpy(numpy_to_compressed(smooth_rgb()), "rgba16")
    with pytest.raises(CodecError, match="mono16 needs a 16-bit grey"):
        compressed_to_numpy(numpy_to_compressed(smooth_rgb()), "mono16")


# --- bytes without a message (the policy's remote wire format) ---------------------------------------


@pytest.mark.parametrize("compression", ["jpeg", "png"])
def test_bytes_without_a_message_are_coded_as_in_a_compressed_image(compression):
    rgb = smooth_rgb()
    data = encode_compressed(rgb, "rgb8", compression, 80)
    msg = numpy_to_compressed(rgb, "rgb8", compression, 80)
    assert data == bytes(msg.data)
    np.testing.assert_array_equal(decode_compressed(data, "rgb8"), compressed_to_numpy(msg, "rgb8"))
    np.testing.assert_array_equal(
        decode_compressed(memoryview(data), "bgr8"), compressed_to_numpy(msg, "bgr8")
    )


def test_bytes_that_are_no_image_are_refused():
    with pytest.raises(CodecError, match="neither JPEG nor PNG"):
        decode_compressed(b"not an image")
    with pytest.raises(CodecError, match="could not be decoded"):
        decode_compressed(b"\xff\xd8\xff" + b"\0" * 20)
    with pytest.raises(CodecError, match="desired_encoding"):
        decode_compressed(encode_compressed(smooth_rgb()), "rgba8")


# --- agreement with cv_bridge where it exists ---------------------------------------------------------


def test_agrees_with_cv_bridge():
    cv_bridge = pytest.importorskip(
        "cv_bridge", reason="cv_bridge is not installable from any registry on this machine (pip-only Jazzy)"
    )
    bridge = cv_bridge.CvBridge()
    for encoding in sorted(ENCODINGS):
        pixels = random_pixels(encoding)
        ours = numpy_to_image(pixels, encoding)
        theirs = bridge.cv2_to_imgmsg(pixels, encoding=encoding)
        assert (theirs.height, theirs.width, theirs.step) == (ours.height, ours.width, ours.step)
        assert bytes(theirs.data) == bytes(ours.data)
        np.testing.assert_array_equal(bridge.imgmsg_to_cv2(ours), image_to_numpy(theirs))
    rgb = smooth_rgb()
    np.testing.assert_array_equal(
        bridge.compressed_imgmsg_to_cv2(numpy_to_compressed(rgb, "bgr8", "png")), rgb
    )
