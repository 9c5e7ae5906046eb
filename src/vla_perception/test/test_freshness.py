"""LatestFrame: ages on both clocks, sequence numbers, overwrites, threads."""

import threading

import pytest
from builtin_interfaces.msg import Time
from vla_perception.freshness import FrameStatus, LatestFrame, time_to_ns


class FakeMonotonic:
    """A hand-driven monotonic clock (the thing under test is the buffer, not the clock)."""

    def __init__(self):
        self.now_ns = 1_000_000_000

    def __call__(self):
        return self.now_ns

    def advance(self, seconds):
        self.now_ns += int(seconds * 1e9)


def test_empty_buffer_refuses():
    buffer = LatestFrame()
    check = buffer.check(0.1)
    assert check.status is FrameStatus.EMPTY and check.sample is None and check.fresh is None
    assert buffer.get(0.1) is None


def test_receipt_age_fresh_then_stale():
    clock = FakeMonotonic()
    buffer = LatestFrame(monotonic_ns=clock)
    assert buffer.put("a", stamp_ns=5) == 1
    clock.advance(0.05)
    sample = buffer.get(0.1)
    assert sample is not None and sample.frame == "a" and sample.seq == 1 and sample.stamp_ns == 5
    assert sample.age_s == pytest.approx(0.05)
    clock.advance(0.1)
    check = buffer.check(0.1)
    assert check.status is FrameStatus.STALE and check.sample.frame == "a" and check.fresh is None
    assert "0.150 s old since receipt" in check.reason


def test_stamp_age_uses_ros_time():
    buffer = LatestFrame()
    buffer.put("f", stamp_ns=10_000_000_000)
    assert buffer.check(0.2, now_ns=10_100_000_000).status is FrameStatus.FRESH
    stale = buffer.check(0.2, now_ns=10_300_000_000)
    assert stale.status is FrameStatus.STALE and "since its stamp" in stale.reason


def test_future_stamp_is_refused_beyond_skew():
    buffer = LatestFrame(max_future_skew_s=0.05)
    buffer.put("f", stamp_ns=2_000_000_000)
    assert buffer.check(1.0, now_ns=1_990_000_000).status is FrameStatus.FRESH  # within skew
    future = buffer.check(1.0, now_ns=1_000_000_000)
    assert future.status is FrameStatus.FUTURE and "in the future" in future.reason


def test_sequence_and_overwrite_counting():
    buffer = LatestFrame()
    buffer.put(1, 0)
    buffer.put(2, 0)  # 1 was never read
    buffer.put(3, 0)  # 2 was never read
    assert buffer.overwritten == 2 and buffer.seq == 3
    assert buffer.get(1.0).frame == 3
    buffer.put(4, 0)  # 3 was read: not an overwrite
    assert buffer.overwritten == 2


def test_clear_empties_but_keeps_counting():
    buffer = LatestFrame()
    buffer.put("x", 0)
    buffer.clear()
    assert buffer.check(1.0).status is FrameStatus.EMPTY
    assert buffer.put("y", 0) == 2
    assert buffer.overwritten == 0


def test_wait_newer_wakes_on_put_and_times_out():
    buffer = LatestFrame()
    assert buffer.wait_newer(0, timeout_s=0.01) is False
    timer = threading.Timer(0.02, buffer.put, args=("late", 0))
    timer.start()
    try:
        assert buffer.wait_newer(0, timeout_s=2.0) is True
    finally:
        timer.join()
    assert buffer.get(1.0).frame == "late"


def test_concurrent_writers_and_readers_keep_counts_consistent():
    buffer = LatestFrame()
    puts_per_writer = 2000
    seen = []

    def write(tag):
        for index in range(puts_per_writer):
            buffer.put((tag, index), 0)

    def read():
        for _ in range(2000):
            sample = buffer.get(10.0)
            if sample is not None:
                seen.append(sample.seq)

    threads = [threading.Thread(target=write, args=(t,)) for t in range(3)] + [threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert buffer.seq == 3 * puts_per_writer
    assert seen == sorted(seen)  # one reader never sees the sequence go backwards
    assert 0 <= buffer.overwritten < buffer.seq


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_max_age_raises(bad):
    with pytest.raises(ValueError, match="max_age_s"):
        LatestFrame().check(bad)


def test_bad_stamp_type_raises():
    with pytest.raises(TypeError, match="stamp_ns must be an int"):
        LatestFrame().put("x", 1.5)


def test_time_to_ns():
    assert time_to_ns(Time(sec=3, nanosec=7)) == 3_000_000_007
