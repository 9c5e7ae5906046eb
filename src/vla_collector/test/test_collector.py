"""The recorder core without ROS: episodes from raw CDR streams, verdicts, raw bags, crash recovery."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader as RosbagsReader
from streams import ENV_NAMES, JOINTS, environment_at, instruction, scene, state_at, streams
from vla_collector.collector import (
    Collector,
    CollectorConfig,
    CollectorError,
    EpisodeStatus,
    PartialEpisodePolicy,
)
from vla_collector.episode import TopicMap
from vla_collector.lerobot import LeRobotV3Dataset, LeRobotV3Writer, VideoCodecConfig

T0 = 1_000 * 10**9
HERE = Path(__file__).parent


class FakeClock:
    def __init__(self, ns):
        self.ns = ns

    def __call__(self):
        return self.ns


def make(tmp_path, **overrides):
    fields = dict(dataset_root=tmp_path / "ds", video=VideoCodecConfig(codec="libx264"), default_task="")
    fields.update(overrides)
    config = CollectorConfig(**fields)
    clock = FakeClock(T0)
    return Collector(config, clock=clock, log=lambda _m: None), clock


def play(collector, clock, t0_ns, seconds, **kwargs):
    """Deliver the streams as a live robot would: the clock follows the messages."""
    for i, event in enumerate(streams(t0_ns, seconds, **kwargs)):
        clock.ns = event.t_ns
        collector.submit(event.topic, event.data, event.t_ns)
        if i % 8 == 0:
            collector.sync()
    clock.ns = t0_ns + int(seconds * 1e9)
    collector.sync()


def test_episodes_land_in_the_dataset_aligned_with_their_frames(tmp_path):
    collector, clock = make(tmp_path)
    try:
        collector.submit("/task_instruction", instruction("pick up the red block"), T0)
        collector.sync()
        results = []
        for ep in range(2):
            start = T0 + ep * 10 * 10**9
            clock.ns = start
            name = collector.start()
            assert name.startswith(f"episode_{ep:06d}_")
            play(collector, clock, start, 1.6)
            results.append(collector.stop(success=True))
    finally:
        collector.close()
    assert [r.status for r in results] == [EpisodeStatus.WRITTEN] * 2
    assert [r.dataset_episode for r in results] == [0, 1]
    ds = LeRobotV3Dataset(tmp_path / "ds")
    assert ds.num_episodes == 2 and ds.tasks == ["pick up the red block"]
    for e in range(2):
        ep = ds.episode(e)
        n = len(ep)
        assert n == 16  # ticks 0.0 .. 1.5 s: the last one takes the command sent until 1.59 s
        t = np.arange(n) / 10.0
        # state at tick k is the robot at k/10 s; the action is the command sent during the frame (90 ms later)
        np.testing.assert_allclose(ep.state, np.stack([state_at(x) for x in t]), atol=1e-5)
        np.testing.assert_allclose(ep.action, np.stack([state_at(x + 0.09) + 1.0 for x in t]), atol=1e-5)
        frames = ds.frames(e, "front")
        np.testing.assert_allclose(frames[:, 30, 30, 0], 3 * np.arange(n) * 3, atol=4)  # image 3k at tick k
    report = results[0].report
    assert report.accepted and report.real_rate_hz == pytest.approx(10.0)
    assert report.streams["camera/front"]["rate_hz"] == pytest.approx(30.0, rel=0.02)
    # the raw bag: complete, readable by another library, with the instruction and every message
    raw = results[0].raw_path
    with RosbagsReader(raw) as bag:
        counts = {c.topic: c.msgcount for c in bag.connections}
    assert (
        counts["/task_instruction"] == 1
        and counts["/joint_states"] == 160
        and counts["/camera/image_raw"] == 48
    )
    info = json.loads((raw / "episode.json").read_text())
    assert (
        info["status"] == "written" and info["dataset_episode"] == 0 and info["report"]["frames"] == 14
    ) or 15
    assert ds.manifest.joint_names == JOINTS


def test_out_of_tolerance_failed_and_discarded_episodes_stay_out(tmp_path):
    collector, clock = make(tmp_path, default_task="stack")
    try:
        collector.start()
        play(collector, clock, T0, 2.0, camera_pause=(0.5, 1.2))
        refused = collector.stop(success=True)
        clock.ns = T0 + 10 * 10**9
        collector.start()
        play(collector, clock, clock.ns, 1.0)
        failed = collector.stop(success=False)
        clock.ns = T0 + 20 * 10**9
        collector.start()
        with pytest.raises(CollectorError, match="already recording"):
            collector.start()
        play(collector, clock, clock.ns, 0.5)
        discarded = collector.discard()
        with pytest.raises(CollectorError, match="no episode"):
            collector.stop()
    finally:
        collector.close()
    assert refused.status is EpisodeStatus.REFUSED and not refused.ok
    assert "camera/front" in refused.message and "real rate" in refused.message
    assert failed.status is EpisodeStatus.NOT_WRITTEN and discarded.status is EpisodeStatus.DISCARDED
    for r in (refused, failed, discarded):
        assert (r.raw_path / "metadata.yaml").is_file()  # raw kept
    assert (
        not (tmp_path / "ds" / "meta" / "info.json").exists()
        or LeRobotV3Dataset(tmp_path / "ds").num_episodes == 0
    )


def test_late_delivery_is_no_drop_and_the_raw_bag_converts_to_the_same_frames(tmp_path):
    """Messages reach the recorder 0.8 s after their stamps (a loaded transport): nothing is late relative to
    anything else, so nothing drops; and converting the raw bag offline gives the frames written live."""
    from vla_collector.episode import DatasetTarget, TopicMap, convert_bag
    from vla_collector.sampler import SamplerConfig

    collector, clock = make(tmp_path, default_task="stack")
    delay = 8 * 10**8
    try:
        clock.ns = T0 + delay
        collector.start()
        for i, event in enumerate(streams(T0, 2.0)):
            clock.ns = event.t_ns + delay
            collector.submit(event.topic, event.data, clock.ns)
            if i % 8 == 0:
                collector.sync()
        collector.sync()
        clock.ns += 10**7
        result = collector.stop(success=True)
    finally:
        collector.close()
    assert result.status is EpisodeStatus.WRITTEN, result.message
    assert result.report.dropped_frames == 0 and result.report.frames >= 18
    info = json.loads((result.raw_path / "episode.json").read_text())
    converted, _ = convert_bag(
        result.raw_path,
        DatasetTarget(tmp_path / "offline", video=VideoCodecConfig(codec="libx264")),
        TopicMap.from_dict(info["topics"]),
        sampler_config=SamplerConfig(**{**info["sampler"], "cameras": tuple(info["sampler"]["cameras"])}),
        start_ns=info["start_ns"],
        stop_ns=info["stop_ns"],
        default_task=info["task"],
    )
    assert converted.report.to_dict() == result.report.to_dict()
    live, offline = (
        LeRobotV3Dataset(tmp_path / "ds").episode(0),
        LeRobotV3Dataset(tmp_path / "offline").episode(0),
    )
    np.testing.assert_array_equal(live.state, offline.state)
    np.testing.assert_array_equal(live.action, offline.action)


SIM_TOPICS = TopicMap(object_poses="/sim/object_poses", scene="/sim/scene")


def test_in_simulation_the_environment_state_is_recorded_and_the_raw_bag_converts_the_same(tmp_path):
    from vla_collector.cli import main
    from vla_collector.episode import DatasetTarget, convert_bag
    from vla_collector.sampler import SamplerConfig

    collector, clock = make(tmp_path, default_task="stack", topics=SIM_TOPICS)
    try:
        collector.submit("/sim/scene", scene(), T0 - 10**9)  # latched: it arrives before any episode
        collector.sync()
        collector.start()
        play(collector, clock, T0, 1.6, poses_hz=30.0)
        result = collector.stop(success=True)
    finally:
        collector.close()
    assert result.status is EpisodeStatus.WRITTEN, result.message
    assert result.report.streams["environment"]["rate_hz"] == pytest.approx(30.0, rel=0.02)
    ds = LeRobotV3Dataset(tmp_path / "ds")
    assert ds.has_environment_state and ds.environment_state_names == ENV_NAMES
    ep = ds.episode(0)
    # The latest poses at or before each tick (the red block slides, the blue one stands).
    expected = np.stack([environment_at(k / 10) for k in range(len(ep))])
    np.testing.assert_allclose(ep.environment_state, expected, atol=1e-6)

    info = json.loads((result.raw_path / "episode.json").read_text())
    assert info["sampler"]["environment"] is True and info["topics"]["scene"] == "/sim/scene"
    converted, _ = convert_bag(
        result.raw_path,
        DatasetTarget(tmp_path / "offline", video=VideoCodecConfig(codec="libx264")),
        TopicMap.from_dict(info["topics"]),
        sampler_config=SamplerConfig(**{**info["sampler"], "cameras": tuple(info["sampler"]["cameras"])}),
        start_ns=info["start_ns"],
        stop_ns=info["stop_ns"],
        default_task=info["task"],
    )
    assert converted.report.to_dict() == result.report.to_dict()
    offline = LeRobotV3Dataset(tmp_path / "offline").episode(0)
    np.testing.assert_array_equal(offline.environment_state, ep.environment_state)
    # vla-dataset convert finds the simulator's topics in the bag and writes the feature too.
    cli = ["convert", str(result.raw_path), "-o", str(tmp_path / "cli"), "--codec", "libx264"]
    assert main([*cli, "--joints", ",".join(JOINTS)]) == 0
    np.testing.assert_array_equal(LeRobotV3Dataset(tmp_path / "cli").episode(0).environment_state, expected)


def test_whether_episodes_record_the_environment_state(tmp_path):
    # auto, no simulator: a dataset without the feature (as on a real robot)
    collector, clock = make(tmp_path, default_task="stack", topics=SIM_TOPICS)
    try:
        collector.start()
        play(collector, clock, T0, 1.0)
        assert collector.stop(success=True).status is EpisodeStatus.WRITTEN
        # A simulator appears later: the dataset keeps its features (and the poses stay in the raw bag).
        collector.submit("/sim/scene", scene(), clock.ns)
        clock.ns = T0 + 10 * 10**9
        collector.start()
        play(collector, clock, clock.ns, 1.0, poses_hz=30.0)
        assert collector.stop(success=True).status is EpisodeStatus.WRITTEN
    finally:
        collector.close()
    ds = LeRobotV3Dataset(tmp_path / "ds")
    assert ds.num_episodes == 2 and not ds.has_environment_state
    assert ds.episode(1).environment_state is None
    # on cannot add the feature to that dataset, off cannot leave it out of one that has it
    collector, _ = make(tmp_path, default_task="stack", topics=SIM_TOPICS, record_environment_state="on")
    try:
        with pytest.raises(CollectorError, match=r"has no observation\.environment_state"):
            collector.start()
    finally:
        collector.close()
    with pytest.raises(ValueError, match="needs the object poses"):
        make(tmp_path, record_environment_state="on")
    sim_root = tmp_path / "sim"
    collector, clock = make(tmp_path, dataset_root=sim_root, default_task="stack", topics=SIM_TOPICS)
    try:
        collector.submit("/sim/scene", scene(), T0)
        collector.start()
        play(collector, clock, T0, 1.0, poses_hz=30.0)
        assert collector.stop(success=True).status is EpisodeStatus.WRITTEN
    finally:
        collector.close()
    assert LeRobotV3Dataset(sim_root).has_environment_state
    collector, _ = make(tmp_path, dataset_root=sim_root, default_task="stack", record_environment_state="off")
    try:
        with pytest.raises(CollectorError, match="every episode needs it"):
            collector.start()
    finally:
        collector.close()


def test_poses_without_a_scene_description_are_rejected_and_named(tmp_path):
    """A simulator publishes /sim/scene (so auto records the feature) but its description never arrives."""
    config = CollectorConfig(
        dataset_root=tmp_path / "ds",
        video=VideoCodecConfig(codec="libx264"),
        default_task="stack",
        topics=SIM_TOPICS,
    )
    clock = FakeClock(T0)
    collector = Collector(config, clock=clock, log=lambda _m: None, scene_available=lambda: True)
    try:
        collector.start()
        play(collector, clock, T0, 1.0, poses_hz=30.0)
        result = collector.stop(success=True)
        assert collector.status().rejected == 30
    finally:
        collector.close()
    assert result.status is EpisodeStatus.REFUSED
    assert "environment" in result.message and "before any scene description" in result.message


def test_other_video_settings_than_the_datasets_are_refused_and_named(tmp_path):
    collector, clock = make(tmp_path, default_task="pick")
    try:
        collector.start()
        play(collector, clock, T0, 1.0)
        assert collector.stop(success=True).status is EpisodeStatus.WRITTEN
    finally:
        collector.close()
    results = []
    config = CollectorConfig(
        dataset_root=tmp_path / "ds",
        video=VideoCodecConfig(codec="libx264", preset="ultrafast"),
        default_task="pick",
    )
    clock = FakeClock(T0 + 10 * 10**9)
    collector = Collector(config, clock=clock, log=lambda _m: None, on_result=results.append)
    try:
        collector.start()
        play(collector, clock, clock.ns, 1.0)
    finally:
        collector.close()
    [result] = results
    assert result.status is EpisodeStatus.ERROR
    assert "preset='ultrafast'" in result.message and "differ from the dataset's" in result.message
    assert "preset='veryfast'" in result.message
    assert LeRobotV3Dataset(tmp_path / "ds").num_episodes == 1


def test_a_start_without_any_task_is_refused(tmp_path):
    collector, _ = make(tmp_path)
    try:
        with pytest.raises(CollectorError, match="no task"):
            collector.start()
    finally:
        collector.close()


def test_instruction_driven_episodes(tmp_path):
    collector, clock = make(tmp_path, episode_on_instruction=True)
    try:
        for task in ("pick", "place"):  # the next instruction arrives as the streams go on
            collector.submit("/task_instruction", instruction(task), clock.ns)
            play(collector, clock, clock.ns, 1.2)
        clock.ns += 10**8
        collector.submit("/task_instruction", instruction(""), clock.ns)
        collector.sync()
    finally:
        collector.close()
    ds = LeRobotV3Dataset(tmp_path / "ds")
    assert ds.num_episodes == 2 and [e.tasks for e in ds.episodes] == [("pick",), ("place",)]


CHILD = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {here!r})
    from streams import streams, instruction
    from vla_collector.collector import Collector, CollectorConfig
    from vla_collector.lerobot import VideoCodecConfig
    clock = [0]
    c = Collector(CollectorConfig(dataset_root={root!r}, video=VideoCodecConfig(codec="libx264"),
                  default_task="pick"), clock=lambda: clock[0], log=lambda m: None)
    def play(t0, seconds):
        for i, e in enumerate(streams(t0, seconds)):
            clock[0] = e.t_ns
            c.submit(e.topic, e.data, e.t_ns)
            if i % 8 == 0:
                c.sync()
        clock[0] = t0 + int(seconds * 1e9)
        c.sync()
    clock[0] = 10**12
    c.start(); play(10**12, 1.5); print(c.stop(True).status.value, flush=True)
    clock[0] = 2 * 10**12
    c.start(); play(2 * 10**12, 3.0)
    print("MID-EPISODE", flush=True)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("policy", [PartialEpisodePolicy.RECOVER, PartialEpisodePolicy.DISCARD])
def test_sigkill_mid_episode_loses_nothing_completed(tmp_path, policy):
    root = tmp_path / "ds"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(here=str(HERE), root=str(root))],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert child.stdout.readline().strip() == "written"
        assert child.stdout.readline().strip() == "MID-EPISODE"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    # right after the crash: the completed episode is there and loadable, the partial one is not
    ds = LeRobotV3Dataset(root)
    assert ds.num_episodes == 1 and len(ds.frames(0, "front")) == ds.episodes[0].length
    partial = sorted((tmp_path / "ds.raw").glob("episode_*"))[-1]
    assert json.loads((partial / "episode.json").read_text())["status"] == "recording"
    assert not (partial / "metadata.yaml").exists()
    # restart: the dataset is repaired, the partial episode recovered or discarded by policy
    collector, _ = make(tmp_path, partial_episode_policy=policy)
    collector.close()
    [result] = collector.recovered
    ds = LeRobotV3Dataset(root)
    with RosbagsReader(partial) as bag:  # the raw bag is whole again either way
        assert bag.message_count > 500
    if policy is PartialEpisodePolicy.RECOVER:
        assert result.status is EpisodeStatus.RECOVERED and ds.num_episodes == 2
        assert ds.episodes[1].length >= 25  # ~3 s at 10 fps, minus what the last chunk lost
        np.testing.assert_allclose(ds.episode(1).state[0], state_at(0.0), atol=1e-5)
        assert len(ds.frames(1, "front")) == ds.episodes[1].length
    else:
        assert result.status is EpisodeStatus.PARTIAL_DISCARDED and ds.num_episodes == 1
    assert not (root / ".staging").exists()
    assert json.loads((partial / "episode.json").read_text())["status"] == result.status.value
    LeRobotV3Writer.open(root)  # appendable


FULL_DISK_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np
    from vla_collector.lerobot import DatasetWriteError, LeRobotV3Writer
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG, like ENOSPC
    w = LeRobotV3Writer.open({root!r})
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))
    n = 40
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (n, 48, 64, 3), dtype=np.uint8)
    try:
        w.write_episode(np.zeros((n, 8)), np.zeros((n, 8)), {{"front": frames}}, "big")
    except DatasetWriteError as e:
        print("ERROR:", e)
    """
)


def test_a_full_disk_gives_a_clear_error_and_an_intact_dataset(tmp_path):
    root = tmp_path / "ds"
    collector, clock = make(tmp_path, default_task="pick")
    try:
        collector.start()
        play(collector, clock, T0, 1.2)
        assert collector.stop().status is EpisodeStatus.WRITTEN
    finally:
        collector.close()
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    out = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD.format(root=str(root))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "ERROR:" in out.stdout and "disk full" in out.stdout, out.stdout + out.stderr
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before  # nothing committed, nothing half-written left behind
    assert LeRobotV3Dataset(root).num_episodes == 1


def test_messages_the_dataset_cannot_use_are_rejected_and_named(tmp_path):
    # a robot without an "elbow" joint: every /joint_states and /joint_commands message is unusable
    collector, clock = make(tmp_path, default_task="pick", state_names=("panda_joint1", "elbow"))
    try:
        collector.start()
        play(collector, clock, T0, 1.0)
        clock.ns += 10**8
        collector.submit("/joint_states", b"\x00\x01garbage", clock.ns)
        collector.sync()
        status = collector.status()
        result = collector.stop()
    finally:
        collector.close()
    assert status.rejected == 201 and status.messages_recorded > 200
    assert result.status is EpisodeStatus.REFUSED
    assert (
        "never received: ['state', 'action']" in result.message and "201 messages rejected" in result.message
    )
    with RosbagsReader(result.raw_path) as bag:  # everything is still in the raw recording
        assert {c.topic: c.msgcount for c in bag.connections}["/joint_states"] == 101


RAW_DISK_FULL_CHILD = textwrap.dedent(
    """
    import resource, signal, sys, time
    sys.path.insert(0, {here!r})
    from streams import streams
    from vla_collector.collector import Collector, CollectorConfig
    from vla_collector.lerobot import VideoCodecConfig
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # file writes past the limit fail with EFBIG, like ENOSPC
    clock = [10**12]
    c = Collector(CollectorConfig(dataset_root={root!r}, video=VideoCodecConfig(codec="libx264"),
                  default_task="pick"), clock=lambda: clock[0], log=lambda m: None)
    def play(t0, seconds, cam_hz=30.0):
        for i, e in enumerate(streams(t0, seconds, cam_hz=cam_hz)):
            clock[0] = e.t_ns
            c.submit(e.topic, e.data, e.t_ns)
            if i % 8 == 0:
                c.sync()
        clock[0] = t0 + int(seconds * 1e9)
        c.sync()
    c.start(); play(10**12, 1.2); print(c.stop(True).status.value, flush=True)
    resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))  # the next bag outgrows the "disk"
    clock[0] = 2 * 10**12
    c.start(); play(2 * 10**12, 6.0)
    status = c.status()
    print(status.state.value, flush=True)
    print(status.last_error, flush=True)
    c.close()
    """
)


def test_a_full_disk_while_recording_ends_the_episode_cleanly(tmp_path):
    root = tmp_path / "ds"
    out = subprocess.run(
        [sys.executable, "-c", RAW_DISK_FULL_CHILD.format(here=str(HERE), root=str(root))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = out.stdout.splitlines()
    assert lines[:2] == ["written", "idle"], out.stdout + out.stderr  # the recorder is ready for the next one
    assert "disk full" in lines[2] and "the dataset is unchanged" in lines[2]
    ds = LeRobotV3Dataset(root)
    assert ds.num_episodes == 1 and len(ds.frames(0, "front")) == ds.episodes[0].length
    failed = sorted((tmp_path / "ds.raw").glob("episode_*"))[-1]
    assert json.loads((failed / "episode.json").read_text())["status"] == "error"
    assert not (root / ".staging").exists() or not any((root / ".staging").iterdir())


def test_a_backlog_beyond_the_byte_budget_is_counted_lost_not_buffered(tmp_path):
    import threading

    from streams import image, joint_state

    blocked, release, hold = threading.Event(), threading.Event(), threading.Event()

    config = CollectorConfig(dataset_root=tmp_path / "ds", default_task="pick", queue_max_mb=1.0)
    collector = Collector(config, clock=lambda: T0, log=lambda _m: None)
    handle = collector._on_message

    def stalling(*args):  # lets the test stall the worker on a message, as a slow disk would
        if hold.is_set():
            blocked.set()
            release.wait(10)
        handle(*args)

    collector._on_message = stalling
    try:
        collector.start()
        hold.set()
        collector.submit("/joint_states", joint_state(T0, 0.0), T0)
        assert blocked.wait(10)
        frame = image(T0, 0, 480, 640)  # 0.9 MB: one fits the 1 MB budget, the rest do not
        for _ in range(5):
            collector.submit("/camera/image_raw", frame, T0)
        lost_while_stalled = collector.status().messages_lost
        hold.clear()
        release.set()
        collector.sync()
        status = collector.status()
        collector.discard()
    finally:
        hold.clear()
        release.set()
        collector.close()
    assert lost_while_stalled == 4
    assert status.messages_recorded == 2 and status.messages_lost == 4
