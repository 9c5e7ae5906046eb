"""The vla-serve message format: compact binary images, and malformed messages refused with WireError."""

import json
import struct

import cv2
import numpy as np
import pytest
from vla_common.policy import ActionChunk
from vla_policy.backends.wire import (
    MAGIC,
    ImageEncoding,
    Message,
    MessageType,
    WireError,
    chunk_message,
    decode,
    encode,
    message_chunk,
    observation_message,
)


def test_image_travels_as_bytes_not_json():
    image = np.arange(32 * 40 * 3, dtype=np.uint8).reshape(32, 40, 3)
    data = encode(observation_message({"observation.images.front": image, "task": "x"}, 3))
    (header_len,) = struct.unpack(">I", data[4:8])
    assert header_len < 300  # a small header...
    assert len(data) == 8 + header_len + image.nbytes  # ...then the raw pixels
    message = decode(data)
    np.testing.assert_array_equal(message.arrays["observation.images.front"], image)
    assert message.id == 3


def _smooth_image(height=48, width=64):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)


def test_jpeg_images_keep_their_bytes_and_rgb_order():
    image = _smooth_image()
    data = encode(observation_message({"observation.images.front": image}, 1), ImageEncoding.JPEG, 90)
    (header_len,) = struct.unpack(">I", data[4:8])
    header = json.loads(data[8 : 8 + header_len])
    assert header["blobs"][0]["encoding"] == "jpeg"
    # The blob is exactly what OpenCV makes of the BGR pixels at that quality: the bytes the wire format
    # carried before it went through vla_perception.codec.
    _, expected = cv2.imencode(".jpg", image[:, :, ::-1], [int(cv2.IMWRITE_JPEG_QUALITY), 90])
    assert data[8 + header_len :] == expected.tobytes()
    back = decode(data).arrays["observation.images.front"]
    assert back.shape == image.shape and back.dtype == np.uint8
    assert np.abs(back.astype(int) - image.astype(int)).mean() < 3  # lossy, but RGB stays RGB


def test_a_jpeg_blob_that_does_not_decode_to_its_shape_is_refused():
    image = _smooth_image()
    data = bytearray(encode(observation_message({"observation.images.front": image}, 1), ImageEncoding.JPEG))
    (header_len,) = struct.unpack(">I", data[4:8])
    header = json.loads(data[8 : 8 + header_len])
    blob = bytes(data[8 + header_len :])
    header["blobs"][0]["shape"] = [10, 10, 3]
    with pytest.raises(WireError, match="does not decode"):
        decode(_raw(header, blob))
    header["blobs"][0]["shape"] = list(image.shape)
    header["blobs"][0]["length"] = 4
    with pytest.raises(WireError, match="does not decode"):
        decode(_raw(header, b"junk"))


def test_chunk_round_trip():
    chunk = ActionChunk(np.random.default_rng(0).normal(size=(4, 2)), ("a", "b"), 5.0, 0.1)
    back = message_chunk(decode(encode(chunk_message(chunk, 9))))
    np.testing.assert_array_equal(back.actions, chunk.actions)
    assert (back.names, back.stamp, back.dt) == (chunk.names, chunk.stamp, chunk.dt)


def _raw(header, payload=b""):
    blob = json.dumps(header).encode()
    return MAGIC + struct.pack(">I", len(blob)) + blob + payload


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"nope", "magic"),
        (MAGIC + struct.pack(">I", 999), "does not fit"),
        (_raw({"type": "launch"}), "malformed"),
        (
            _raw(
                {
                    "type": "infer",
                    "blobs": [{"key": "k", "encoding": "raw", "dtype": "<f8", "shape": [2], "length": 16}],
                },
                b"\0" * 8,
            ),
            "past the end",
        ),
        (
            _raw(
                {
                    "type": "infer",
                    "blobs": [{"key": "k", "encoding": "raw", "dtype": "<f8", "shape": [3], "length": 16}],
                },
                b"\0" * 16,
            ),
            "needs",
        ),
        (
            _raw(
                {
                    "type": "infer",
                    "blobs": [{"key": "k", "encoding": "raw", "dtype": "|O", "shape": [1], "length": 8}],
                },
                b"\0" * 8,
            ),
            "not allowed",
        ),
        (_raw({"type": "ok"}, b"extra"), "trailing"),
        ("a text frame", "text"),
    ],
)
def test_malformed_messages_are_refused(data, match):
    with pytest.raises(WireError, match=match):
        decode(data)


def test_error_reply_raises():
    from vla_policy.backends.wire import RemoteError

    with pytest.raises(RemoteError, match="boom"):
        message_chunk(Message(MessageType.ERROR, 1, {"message": "boom"}))


def test_non_rgb_images_are_refused_on_encode():
    with pytest.raises(WireError, match="HxWx3 uint8"):
        encode(observation_message({"observation.images.front": np.zeros((4, 4), np.float32)}, 1))


def test_the_wire_format_and_vla_serve_load_no_ros_package():
    """vla-serve may run on a machine without ROS: the codec builds messages only where it is asked to."""
    import subprocess
    import sys

    code = (
        "import sys, vla_policy.backends.wire, vla_policy.serve\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'rclpy', 'sensor_msgs', 'builtin_interfaces'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
