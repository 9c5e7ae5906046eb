"""FrameRateCheck: frames received against the camera's CameraInfo, with plain receive times."""

import math

import pytest
from vla_perception.frame_rate import (
    MIN_RECEIVED_RATIO,
    FrameRateCheck,
    FrameRateStatus,
    camera_info_topic,
)


def feed(check, start, seconds, rate_hz, keep_every=1, infos=True):
    """A camera at ``rate_hz`` from ``start``: every CameraInfo arrives, every ``keep_every``-th image."""
    n = round(seconds * rate_hz)
    for i in range(n):
        t = start + i / rate_hz
        if infos:
            check.info(t)
        if i % keep_every == 0:
            check.frame(t)
    return start + n / rate_hz


def test_all_frames_is_ok_and_reports_rates():
    check = FrameRateCheck("front")
    end = feed(check, 100.0, 3.0, 30.0)
    report, changed = check.update(end)
    assert changed and report.status is FrameRateStatus.OK
    assert report.ratio == pytest.approx(1.0)
    assert report.camera_hz == pytest.approx(30.0, rel=0.05)
    assert report.received_hz == pytest.approx(30.0, rel=0.05)
    assert report.frames_total == report.infos_total == 90
    assert "30.0 of 30.0 frames/s" in report.summary()


def test_half_the_frames_warns_once_then_recovers_with_hysteresis():
    check = FrameRateCheck("front")
    t = feed(check, 0.0, 3.0, 30.0)
    report, changed = check.update(t)
    assert changed and report.status is FrameRateStatus.OK
    t = feed(check, t, 3.0, 30.0, keep_every=2)  # a publisher throttled to 50 %
    report, changed = check.update(t)
    assert changed and report.status is FrameRateStatus.LOW
    assert report.ratio == pytest.approx(0.5, abs=0.02)
    warning = report.warning("/camera/image_raw")
    assert "15.0 of 30.0 frames/s" in warning and "/camera/image_raw" in warning
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" in warning and "vla-up" in warning
    # still low: no new change, so the node does not log again
    t = feed(check, t, 1.0, 30.0, keep_every=2)
    assert check.update(t)[1] is False
    # 92 %: above the warning threshold but below the recovery threshold, so still LOW (no flapping)
    check2 = FrameRateCheck("front")
    t2 = feed(check2, 0.0, 3.0, 30.0, keep_every=2)
    assert check2.update(t2)[0].status is FrameRateStatus.LOW
    for i in range(90):  # 3 s at 30 Hz, one image in 12 lost: 91.7 %
        check2.info(t2 + i / 30)
        if i % 12:
            check2.frame(t2 + i / 30)
    report, changed = check2.update(t2 + 3.0)
    assert MIN_RECEIVED_RATIO < report.ratio < 0.95
    assert report.status is FrameRateStatus.LOW and not changed
    # full rate again: recovered
    t = feed(check, t, 3.0, 30.0)
    report, changed = check.update(t)
    assert changed and report.status is FrameRateStatus.OK


def test_no_camera_info_means_no_verdict():
    check = FrameRateCheck("wrist")
    t = feed(check, 0.0, 3.0, 30.0, infos=False)
    report, changed = check.update(t)
    assert report.status is FrameRateStatus.UNKNOWN and not changed
    assert math.isnan(report.ratio) and "no CameraInfo" in report.reason
    assert report.frames_total == 90
    assert report.diagnostic_values()["wrist_frame_rate_check"] == "unknown: no CameraInfo received"


def test_camera_that_stops_leaves_the_window_without_a_verdict():
    check = FrameRateCheck("front")
    t = feed(check, 0.0, 3.0, 30.0, keep_every=2)
    assert check.update(t)[0].status is FrameRateStatus.LOW
    report, changed = check.update(t + 10.0)  # nothing for 10 s: the stale-image checks say so, not this
    assert changed and report.status is FrameRateStatus.UNKNOWN
    assert report.frames_total == 45 and report.infos_total == 90


def test_a_low_rate_camera_is_judged_once_the_window_holds_enough():
    check = FrameRateCheck("front", min_infos=10)
    t = feed(check, 0.0, 0.3, 10.0)  # 3 CameraInfo: too few
    assert check.update(t)[0].status is FrameRateStatus.UNKNOWN
    t = feed(check, t, 2.7, 10.0, keep_every=3)
    assert check.update(t)[0].status is FrameRateStatus.LOW


def test_diagnostic_values_and_bad_arguments():
    check = FrameRateCheck("front")
    t = feed(check, 0.0, 3.0, 20.0)
    values = check.update(t)[0].diagnostic_values()
    assert values["front_frame_rate_check"] == "ok"
    assert values["front_received_ratio"] == "1.000"
    assert values["front_frames_received"] == "60" and values["front_camera_info_received"] == "60"
    with pytest.raises(ValueError, match="window_s"):
        FrameRateCheck("front", window_s=0.0)
    with pytest.raises(ValueError, match="min_ratio"):
        FrameRateCheck("front", min_ratio=0.97, recovered_ratio=0.95)
    with pytest.raises(ValueError, match="min_infos"):
        FrameRateCheck("front", min_infos=0)


def test_camera_info_topic_beside_the_image_topic():
    assert camera_info_topic("/camera/image_raw") == "/camera/camera_info"
    assert camera_info_topic("/wrist_camera/image_rect") == "/wrist_camera/camera_info"
    assert camera_info_topic("/rgb") is None
    assert camera_info_topic("/camera/compressed") is None
