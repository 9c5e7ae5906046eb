"""vla-dataset: info, validate (catches corruption), stats, convert with topic maps, export-video, plot, replay."""

import json
import os
import subprocess
import sys
import threading
import time

import av
import numpy as np
import pytest
from vla_collector.cli import main, validate_dataset
from vla_collector.lerobot import LeRobotV3Dataset
from vla_common.testing import shared_fixtures

FIXTURES = shared_fixtures(__file__)
REF_DS = FIXTURES / "lerobot_v3_reference"
REF_BAG = FIXTURES / "rosbag2_mcap_reference"
needs_fixtures = pytest.mark.skipif(
    not REF_BAG.is_dir() or not REF_DS.is_dir(), reason="shared fixtures missing"
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "ds"
    rc = main(["convert", str(REF_BAG), str(REF_BAG), "-o", str(root), "--codec", "libx264"])
    assert rc == 0
    return root


@needs_fixtures
def test_info_validate_and_stats_on_lerobots_dataset(capsys):
    assert main(["info", str(REF_DS)]) == 0
    out = capsys.readouterr().out
    assert "3 (39 frames" in out and "put the red block on the blue block" in out and "av1" in out
    assert main(["validate", str(REF_DS)]) == 0
    assert "OK (3 episodes, 39 frames)" in capsys.readouterr().out
    assert main(["stats", str(REF_DS), "--feature", "observation.images.wrist"]) == 0
    assert "count 39" in capsys.readouterr().out
    assert main(["stats", str(REF_DS), "--feature", "nope"]) == 2


@needs_fixtures
def test_convert_twice_appends_episodes(converted, capsys):
    ds = LeRobotV3Dataset(converted)
    assert ds.num_episodes == 2 and [e.length for e in ds.episodes] == [19, 19]
    assert ds.episode(1).index.tolist() == list(range(19, 38))
    assert validate_dataset(converted) == []


@needs_fixtures
def test_convert_with_topic_maps_and_refusals(tmp_path, capsys):
    out = tmp_path / "swapped"
    rc = main([
        "convert", str(REF_BAG), "-o", str(out), "--camera", "top=/camera/image_raw",
        "--state-topic", "/joint_commands", "--action-topic", "/joint_states", "--instruction-topic", "",
        "--task", "mirror", "--joints", "panda_joint2,panda_joint1", "--codec", "libx264", "--fps", "5",
    ])  # fmt: skip
    assert rc == 0, capsys.readouterr()
    ds = LeRobotV3Dataset(out)
    assert ds.camera_names == ("top",) and ds.tasks == ["mirror"] and ds.fps == 5
    assert ds.features["observation.state"]["names"] == ["panda_joint2", "panda_joint1"]
    # state is now the command (= state + 0.01)
    assert main(["convert", str(REF_BAG), "-o", str(tmp_path / "x"), "--camera", "front"]) == 2
    assert "NAME=/topic" in capsys.readouterr().err
    assert main(["convert", str(REF_BAG), "-o", str(tmp_path / "y"), "--camera", "w=/none"]) == 2
    assert "/none is not in the bag" in capsys.readouterr().err
    # a 1 ms gap limit refuses the 100 ms camera period: reported, exit 1, nothing written
    assert main(["convert", str(REF_BAG), "-o", str(tmp_path / "z"), "--max-gap", "0.001"]) == 1
    assert "REFUSED" in capsys.readouterr().out
    assert not (tmp_path / "z" / "data").exists() or not list((tmp_path / "z" / "data").rglob("*.parquet"))


@needs_fixtures
def test_validate_catches_corruption(converted, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(converted, bad)
    info = json.loads((bad / "meta/info.json").read_text())
    info["total_frames"] = 99
    (bad / "meta/info.json").write_text(json.dumps(info))
    LeRobotV3Dataset(bad).video_path(1, "front")[0].unlink()  # the mp4 holding episode 1 (shared with 0)
    problems = validate_dataset(bad)
    assert any("total_frames 99" in p for p in problems)
    assert any("episode 1 camera front" in p and "missing" in p for p in problems)
    assert main(["validate", str(bad)]) == 1
    assert main(["validate", str(tmp_path / "nothing")]) == 1


@needs_fixtures
def test_export_video_and_plot(converted, tmp_path):
    out = tmp_path / "ep1.mp4"
    assert main(["export-video", str(converted), "--episode", "1", "-o", str(out)]) == 0
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert c.streams.video[0].codec_context.name == "h264"
    assert len(frames) == 19 and frames[0].shape == (48, 64, 3)
    np.testing.assert_allclose([f[30, 40, 0] for f in frames], 5 * np.arange(19), atol=5)
    png = tmp_path / "plot.png"
    assert main(["plot", str(converted), "--episode", "0", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert main(["export-video", str(converted), "--episode", "7", "-o", str(out)]) == 2


@pytest.mark.ros
@needs_fixtures
def test_replay_publishes_the_episode_with_clock(converted):
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("replay_listener", context=context)
    got = {"state": [], "clock": [], "image": []}
    node.create_subscription(JointState, "/replay_test/joint_states", got["state"].append, 50)
    node.create_subscription(Clock, "/clock", got["clock"].append, 50)
    node.create_subscription(Image, "/replay_test/image", got["image"].append, qos_profile_sensor_data)
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        t0 = time.monotonic()
        subprocess.run(
            [
                sys.executable, "-m", "vla_collector.cli", "replay", str(converted), "--episode", "1",
                "--rate", "4", "--state-topic", "/replay_test/joint_states",
                "--camera", "front=/replay_test/image", "--wait-s", "15", "--start-time-ns", str(5 * 10**9),
            ],
            check=True, timeout=60, env={**os.environ}, capture_output=True,
        )  # fmt: skip
        elapsed = time.monotonic() - t0
        time.sleep(0.3)
    finally:
        stop.set()
        spinner.join(2)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert len(got["state"]) == 19 and len(got["image"]) >= 15  # images are best effort
    ds = LeRobotV3Dataset(converted)
    np.testing.assert_allclose([m.position for m in got["state"]], ds.episode(1).state, atol=1e-6)
    stamps = [c.clock.sec + c.clock.nanosec * 1e-9 for c in got["clock"]]
    assert stamps[0] == pytest.approx(5.0) and stamps[-1] == pytest.approx(6.8)
    assert elapsed > 1.8 / 4  # paced: 1.8 s of episode at 4x


def test_convert_samples_a_collector_bag_with_the_timing_it_was_recorded_with():
    from dataclasses import asdict

    from vla_collector.cli import _recorded_sampler
    from vla_collector.sampler import SamplerConfig

    live = SamplerConfig(fps=10, max_wait_s=1.5, action_lookahead_s=0.05, state_max_age_s=0.3)
    recorded = {"sampler": asdict(live)}
    base = SamplerConfig(fps=10, rate_tolerance=0.2, max_gap_s=2.0)
    used = _recorded_sampler(recorded, base)
    assert (used.max_wait_s, used.action_lookahead_s, used.state_max_age_s) == (1.5, 0.05, 0.3)
    assert (used.rate_tolerance, used.max_gap_s) == (0.2, 2.0)  # the verdict stays the command's
    assert _recorded_sampler(recorded, SamplerConfig(fps=15)) == SamplerConfig(fps=15)  # other fps: defaults
    assert _recorded_sampler({}, base) == base
