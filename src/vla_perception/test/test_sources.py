"""Frame sources on real files; failures are SourceErrors or ERROR reads, never silent."""

import cv2
import numpy as np
import pytest
from helpers import VideoServer, write_pattern_images, write_pattern_video
from vla_perception.pattern import read_counter
from vla_perception.sources import (
    CaptureSource,
    DirectorySource,
    PatternSource,
    ReadStatus,
    SourceError,
    SourceKind,
    guess_kind,
    to_rgb,
)


def test_guess_kind(tmp_path):
    assert guess_kind("pattern") is SourceKind.PATTERN
    assert guess_kind("0") is SourceKind.DEVICE
    assert guess_kind("/dev/video2") is SourceKind.DEVICE
    assert guess_kind("rtsp://cam.local:554/stream") is SourceKind.STREAM
    assert guess_kind("http://127.0.0.1:8080/video.mjpg") is SourceKind.STREAM
    assert guess_kind(str(tmp_path)) is SourceKind.DIRECTORY
    assert guess_kind(str(tmp_path / "clip.mp4")) is SourceKind.VIDEO


def test_to_rgb_from_what_opencv_gives():
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    assert to_rgb(bgr)[0, 0].tolist() == [0, 0, 200]
    assert to_rgb(np.full((2, 2), 7, np.uint8)).shape == (2, 2, 3)
    assert to_rgb(np.zeros((2, 2, 4), np.uint8)).shape == (2, 2, 3)
    assert to_rgb(np.full((2, 2, 3), 0x1234, np.uint16))[0, 0, 0] == 0x12
    with pytest.raises(ValueError, match="unsupported frame dtype"):
        to_rgb(np.zeros((2, 2, 3), np.float32))


def test_pattern_source_counts():
    source = PatternSource(160, 120)
    source.open()
    counters = [read_counter(source.read().frame) for _ in range(3)]
    assert counters == [0, 1, 2]


def test_video_source_plays_and_loops(tmp_path):
    path = write_pattern_video(tmp_path / "clip.mp4", frames=5)
    source = CaptureSource(SourceKind.VIDEO, str(path), loop=True)
    source.open()
    try:
        counters = [read_counter(source.read().frame) for _ in range(12)]
    finally:
        source.close()
    assert counters == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


def test_video_source_ends_without_loop(tmp_path):
    path = write_pattern_video(tmp_path / "clip.mp4", frames=3)
    source = CaptureSource(SourceKind.VIDEO, str(path), loop=False)
    source.open()
    try:
        statuses = [source.read().status for _ in range(4)]
    finally:
        source.close()
    assert statuses == [ReadStatus.FRAME] * 3 + [ReadStatus.END]


def test_missing_video_file_raises(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        CaptureSource(SourceKind.VIDEO, str(tmp_path / "nope.mp4")).open()


def test_corrupt_video_file_raises(tmp_path):
    path = tmp_path / "bad.mp4"
    path.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SourceError, match="could not open"):
        CaptureSource(SourceKind.VIDEO, str(path)).open()


def test_missing_device_raises():
    with pytest.raises(SourceError, match="does not exist"):
        CaptureSource(SourceKind.DEVICE, "/dev/video_missing_for_test").open()


def test_unreachable_stream_raises():
    # Port 9 (discard) on localhost: connection refused at once.
    with pytest.raises(SourceError, match="could not open"):
        CaptureSource(SourceKind.STREAM, "http://127.0.0.1:9/stream.mjpg").open()


def test_directory_source_plays_in_order_and_rescans(tmp_path):
    folder = write_pattern_images(tmp_path / "imgs", [0, 1])
    source = DirectorySource(str(folder), loop=True)
    source.open()
    assert [read_counter(source.read().frame) for _ in range(2)] == [0, 1]
    write_pattern_images(folder, [2])  # joins at the next pass
    assert [read_counter(source.read().frame) for _ in range(3)] == [0, 1, 2]


def test_directory_source_skips_unreadable_file(tmp_path):
    folder = write_pattern_images(tmp_path / "imgs", [0])
    (folder / "frame_00001.png").write_bytes(b"garbage")
    source = DirectorySource(str(folder), loop=False)
    source.open()
    results = [source.read() for _ in range(3)]
    assert [r.status for r in results] == [ReadStatus.FRAME, ReadStatus.SKIP, ReadStatus.END]
    assert "could not read image" in results[1].detail


def test_directory_source_errors_when_directory_disappears(tmp_path):
    folder = write_pattern_images(tmp_path / "imgs", [0, 1])
    source = DirectorySource(str(folder), loop=True)
    source.open()
    source.read()
    folder.rename(tmp_path / "gone")
    result = source.read()
    assert result.status is ReadStatus.ERROR and "disappeared" in result.detail


def test_empty_or_missing_directory_raises(tmp_path):
    with pytest.raises(SourceError, match="cannot be listed"):
        DirectorySource(str(tmp_path / "missing")).open()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images")
    with pytest.raises(SourceError, match="holds no images"):
        DirectorySource(str(tmp_path / "empty")).open()


def test_capture_source_refuses_other_kinds():
    with pytest.raises(ValueError, match="cannot open a directory source"):
        CaptureSource(SourceKind.DIRECTORY, "/tmp")


def test_written_png_is_what_opencv_reads(tmp_path):
    folder = write_pattern_images(tmp_path / "imgs", [7])
    assert read_counter(cv2.imread(str(folder / "frame_00007.png"))) == 7


def test_network_stream_over_http(tmp_path):
    write_pattern_video(tmp_path / "clip.mp4", frames=4)
    server = VideoServer(tmp_path).start()
    source = CaptureSource(SourceKind.STREAM, server.url("clip.mp4"))
    try:
        source.open()
        results = [source.read() for _ in range(5)]
    finally:
        source.close()
        server.stop()
    assert [read_counter(r.frame) for r in results[:4]] == [0, 1, 2, 3]
    assert results[4].status is ReadStatus.ERROR and "stopped delivering" in results[4].detail
