"""Preprocessing: semantics, validation, and byte-equality of the training and inference paths."""

import array
import json

import av
import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image
from vla_perception.codec import image_to_rgb8, numpy_to_image
from vla_perception.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorOrder,
    CropMode,
    InputSpec,
    Layout,
    OutputDType,
    ResizeMode,
    preprocess,
    preprocess_batch,
)


def gradient(height=48, width=64):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4 % 256, y * 5 % 256, (x * y) % 256], axis=2).astype(np.uint8)


def test_identity_spec_scales_to_unit_range_chw():
    frame = gradient(4, 6)
    out = preprocess(frame, InputSpec(height=4, width=6))
    assert out.shape == (3, 4, 6) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, frame.transpose(2, 0, 1) / 255.0, rtol=0, atol=1e-6)


def test_normalisation_by_hand():
    frame = np.array([[[255, 0, 128]]], np.uint8)
    spec = InputSpec(height=1, width=1, mean=IMAGENET_MEAN, std=IMAGENET_STD, layout=Layout.HWC)
    out = preprocess(frame, spec)
    expected = (np.array([1.0, 0.0, 128 / 255]) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)


def test_bgr_order_swaps_channels_and_their_statistics():
    frame = gradient(8, 8)
    rgb = InputSpec(height=8, width=8, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    bgr = InputSpec(height=8, width=8, mean=IMAGENET_MEAN, std=IMAGENET_STD, color_order=ColorOrder.BGR)
    np.testing.assert_array_equal(preprocess(frame, bgr), preprocess(frame, rgb)[::-1])


def test_stretch_resizes_to_size():
    out = preprocess(gradient(48, 64), InputSpec(height=32, width=20))
    assert out.shape == (3, 32, 20)


def test_pad_letterboxes_keeping_aspect():
    frame = np.full((20, 40, 3), 200, np.uint8)
    spec = InputSpec(
        height=40, width=40, resize=ResizeMode.PAD, dtype=OutputDType.UINT8, layout=Layout.HWC, pad_value=7
    )
    out = preprocess(frame, spec)
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8
    assert (out[:10] == 7).all() and (out[30:] == 7).all() and (out[10:30] == 200).all()


def test_cover_fills_and_centre_crops():
    frame = np.zeros((20, 40, 3), np.uint8)
    frame[:, 10:30] = 255  # the centre 20 columns survive a cover crop to a square
    spec = InputSpec(height=20, width=20, resize=ResizeMode.COVER, dtype=OutputDType.UINT8, layout=Layout.HWC)
    assert (preprocess(frame, spec) == 255).all()


def test_centre_crop_takes_the_middle():
    frame = np.zeros((10, 10, 3), np.uint8)
    frame[1:9, 1:9] = 50
    spec = InputSpec(height=8, width=8, crop=CropMode.CENTER, crop_fraction=0.8, dtype=OutputDType.UINT8)
    assert (preprocess(frame, spec) == 50).all()


def test_random_crop_needs_rng_is_seeded_and_has_an_inference_twin():
    frame = gradient()
    spec = InputSpec(height=16, width=16, crop=CropMode.RANDOM, crop_fraction=0.5)
    with pytest.raises(ValueError, match="needs an rng"):
        preprocess(frame, spec)
    first = preprocess(frame, spec, np.random.default_rng(1))
    np.testing.assert_array_equal(first, preprocess(frame, spec, np.random.default_rng(1)))
    draws = {preprocess(frame, spec, np.random.default_rng(seed)).tobytes() for seed in range(8)}
    assert len(draws) > 1
    twin = spec.for_inference()
    assert twin.crop is CropMode.CENTER and twin.crop_fraction == 0.5
    centre = InputSpec(height=16, width=16, crop=CropMode.CENTER, crop_fraction=0.5)
    np.testing.assert_array_equal(preprocess(frame, twin), preprocess(frame, centre))


def test_input_is_not_modified_and_batch_matches_single():
    frames = [gradient(), gradient()[::-1].copy()]
    before = [f.copy() for f in frames]
    spec = InputSpec(height=12, width=12, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    batch = preprocess_batch(frames, spec)
    assert batch.shape == (2, 3, 12, 12)
    for frame, original, single in zip(frames, before, batch, strict=True):
        np.testing.assert_array_equal(frame, original)
        assert single.tobytes() == preprocess(frame, spec).tobytes()


def test_spec_dict_round_trip_through_json():
    spec = InputSpec(
        height=96,
        width=128,
        resize="pad",
        crop="random",
        crop_fraction=0.9,
        color_order="bgr",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        layout="hwc",
        interpolation="linear",
    )
    assert spec.resize is ResizeMode.PAD and spec.layout is Layout.HWC
    assert InputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"height": 0}, "height must be a positive int"),
        ({"width": 2.5}, "width must be a positive int"),
        ({"resize": "squash"}, "resize must be one of"),
        ({"crop": CropMode.CENTER, "crop_fraction": 1.5}, r"crop_fraction must be in \(0, 1\]"),
        ({"crop_fraction": 0.5}, "needs crop=center or crop=random"),
        ({"std": (1.0, 0.0, 1.0)}, "std must be positive"),
        ({"mean": (0.5, 0.5)}, "mean must be 3 finite numbers"),
        ({"mean": (0.5, float("nan"), 0.5)}, "mean must be 3 finite numbers"),
        ({"dtype": "uint8", "mean": IMAGENET_MEAN}, "cannot normalise"),
        ({"pad_value": 300}, "pad_value must be an int"),
    ],
)
def test_invalid_specs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InputSpec(**kwargs)


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(ValueError, match="unknown InputSpec keys"):
        InputSpec.from_dict({"height": 8, "size": 8})


@pytest.mark.parametrize(
    "frame",
    [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), [[1, 2, 3]]],
    ids=["float", "grey", "rgba", "list"],
)
def test_bad_frames_are_refused(frame):
    with pytest.raises(ValueError, match="HxWx3 uint8 RGB"):
        preprocess(frame, InputSpec())


def test_empty_frame_is_refused():
    with pytest.raises(ValueError, match="empty frame"):
        preprocess(np.zeros((0, 8, 3), np.uint8), InputSpec())


def _dataset_frames(tmp_path, count=4):
    """The training side: frames written to an H.264 video and decoded back the way the dataset reader does."""
    path = tmp_path / "episode.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for index in range(count):
            frame = np.roll(gradient(64, 96), index * 3, axis=1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_training_and_inference_paths_give_byte_equal_model_input(tmp_path):
    dataset = _dataset_frames(tmp_path)
    spec = InputSpec(
        height=48,
        width=48,
        resize=ResizeMode.COVER,
        crop=CropMode.RANDOM,
        crop_fraction=0.9,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    inference_spec = spec.for_inference()
    for frame in dataset:
        # Inference: a camera driver publishes the frame as bgr8 with padded rows; the policy node
        # receives the CDR bytes and decodes them with the codec.
        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        padded = np.zeros((bgr.shape[0], bgr.shape[1] * 3 + 16), np.uint8)
        padded[:, : bgr.shape[1] * 3] = bgr.reshape(bgr.shape[0], -1)
        published = Image(height=bgr.shape[0], width=bgr.shape[1], encoding="bgr8", step=padded.shape[1])
        published.data = array.array("B", padded.tobytes())
        received = deserialize_message(serialize_message(published), Image)
        live = preprocess(image_to_rgb8(received), inference_spec)
        # Training: the same frame read straight from the dataset array (a strided view of the stack).
        trained = preprocess(frame, inference_spec)
        assert live.tobytes() == trained.tobytes()
        # And the tight rgb8 message path agrees too.
        tight = deserialize_message(serialize_message(numpy_to_image(frame, "rgb8")), Image)
        assert preprocess(image_to_rgb8(tight), inference_spec).tobytes() == trained.tobytes()


def test_uint8_output_matches_opencv_resize():
    frame = gradient(48, 64)
    spec = InputSpec(height=24, width=32, dtype=OutputDType.UINT8, layout=Layout.HWC)
    np.testing.assert_array_equal(
        preprocess(frame, spec), cv2.resize(frame, (32, 24), interpolation=cv2.INTER_AREA)
    )
