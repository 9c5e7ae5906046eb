"""rosbag2 MCAP bags we write (read back by rosbags and mcap-ros2 independently), crash-truncated bags,
and conversion of the third-party reference bag into a LeRobot v3 dataset."""

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.rosbag2 import Reader as RosbagsReader
from rosbags.typesys import Stores, get_typestore
from vla_collector.bag import (
    BagError,
    BagReader,
    BagWriter,
    Compression,
    QosProfile,
    header_stamp_ns,
    message_class,
    recover_bag,
    serialize,
)
from vla_collector.episode import ConversionError, DatasetTarget, TopicMap, convert_bag, decode_rgb
from vla_collector.lerobot import LeRobotV3Dataset
from vla_common.testing import shared_fixtures

REF_BAG = shared_fixtures(__file__) / "rosbag2_mcap_reference"
needs_ref_bag = pytest.mark.skipif(
    not REF_BAG.is_dir(), reason="shared/fixtures/rosbag2_mcap_reference missing"
)
JOINTS7 = tuple(f"panda_joint{i}" for i in range(1, 8))

Time = message_class("builtin_interfaces/msg/Time")
Header = message_class("std_msgs/msg/Header")
ImageMsg = message_class("sensor_msgs/msg/Image")
JointStateMsg = message_class("sensor_msgs/msg/JointState")
StringMsg = message_class("std_msgs/msg/String")


def header(ns):
    return Header(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="f")


def image_cdr(ns, value, h=32, w=48, encoding="rgb8"):
    pixels = np.zeros((h, w, 3), np.uint8)
    pixels[..., 0] = value
    if encoding == "bgr8":
        pixels = pixels[..., ::-1].copy()
    msg = ImageMsg(header(ns), h, w, encoding, 0, w * 3, pixels.reshape(-1))
    return serialize("sensor_msgs/msg/Image", msg)


def joints_cdr(ns, positions, names=JOINTS7):
    msg = JointStateMsg(header(ns), list(names), np.asarray(positions, float), np.zeros(0), np.zeros(0))
    return serialize("sensor_msgs/msg/JointState", msg)


def write_demo_bag(directory, seconds=2.0, compression=Compression.LZ4, encoding="rgb8"):
    w = BagWriter(directory, compression=compression, chunk_size=64 * 1024)
    w.add_topic("/joint_states", "sensor_msgs/msg/JointState")
    w.add_topic("/joint_commands", "sensor_msgs/msg/JointState")
    w.add_topic("/cam", "sensor_msgs/msg/Image")
    w.add_topic(
        "/task_instruction", "std_msgs/msg/String", [QosProfile(durability="transient_local", depth=1)]
    )
    t0 = 1_700_000_000 * 10**9
    w.write("/task_instruction", serialize("std_msgs/msg/String", StringMsg("stack it")), t0)
    for k in range(int(seconds * 50)):
        ns = t0 + k * 20_000_000
        w.write("/joint_states", joints_cdr(ns, np.full(7, k * 0.01)), ns)
        w.write("/joint_commands", joints_cdr(ns, np.full(7, k * 0.01 + 0.5)), ns)
        if k % 2 == 0:
            w.write("/cam", image_cdr(ns, 2 * (k // 2), encoding=encoding), ns)
    return w.close()


def test_our_bag_opens_in_rosbags_and_mcap_ros2(tmp_path):
    bag = write_demo_bag(tmp_path / "ep")
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "mcap" and meta["message_count"] == 251
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]}
    assert counts == {"/joint_states": 100, "/joint_commands": 100, "/cam": 50, "/task_instruction": 1}
    qos = meta["topics_with_message_count"][3]["topic_metadata"]["offered_qos_profiles"][0]
    assert qos["depth"] == 1 and qos["durability"] == "transient_local"
    store = get_typestore(Stores.ROS2_JAZZY)
    with RosbagsReader(bag) as reader:  # the independent check: another library's rosbag2 reader
        assert {c.topic: c.msgtype for c in reader.connections}["/cam"] == "sensor_msgs/msg/Image"
        latched = next(c for c in reader.connections if c.topic == "/task_instruction")
        assert latched.ext.offered_qos_profiles[0].depth == 1
        images = [
            store.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages() if c.topic == "/cam"
        ]
    assert len(images) == 50 and images[3].data.reshape(32, 48, 3)[0, 0, 0] == 6
    with open(next(bag.glob("*.mcap")), "rb") as f:  # Foxglove's path: MCAP with ros2msg schemas
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        decoded = [m for _, ch, _, m in reader.iter_decoded_messages() if ch.topic == "/joint_commands"]
    assert decoded[10].position[0] == pytest.approx(0.6)


def test_a_bag_cut_by_a_crash_is_read_up_to_its_last_whole_chunk_and_reindexed(tmp_path):
    bag = write_demo_bag(tmp_path / "ep", seconds=4.0)
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.6)])
    (bag / "metadata.yaml").unlink()
    reader = BagReader(bag)
    n = sum(1 for _ in reader.messages())
    assert 0 < n < 501 and reader.truncated
    assert recover_bag(bag) == n  # rewritten whole: every tool opens it again
    with RosbagsReader(bag) as r:
        assert sum(c.msgcount for c in r.connections) == n
        assert {c.topic for c in r.connections} >= {"/joint_states", "/cam"}
    assert not BagReader(bag).truncated and sum(1 for _ in BagReader(bag).messages()) == n


def test_header_stamp_and_bad_buffers():
    assert header_stamp_ns(joints_cdr(12_345_678_901, np.zeros(7))) == 12_345_678_901
    with pytest.raises(BagError, match="short"):
        header_stamp_ns(b"\x00\x01")
    with pytest.raises(BagError, match="encapsulation"):
        header_stamp_ns(b"\x07\x07" + bytes(20))
    with pytest.raises(BagError, match="does not exist"):
        BagReader("/nonexistent/bag")


def test_bgr_images_go_through_the_codec():
    rgb = decode_rgb(image_cdr(0, 200, encoding="bgr8"))
    assert rgb[0, 0].tolist() == [200, 0, 0]


@needs_ref_bag
def test_convert_the_reference_bag(tmp_path):
    target = DatasetTarget(tmp_path / "ds", state_names=JOINTS7, action_names=JOINTS7)
    result, _ = convert_bag(REF_BAG, target, TopicMap())
    assert result.report.accepted and result.summary is not None
    ds = LeRobotV3Dataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and ds.tasks == ["pick up the red block"]
    n = ds.episodes[0].length
    assert n == 19  # 1.98 s at 10 fps; the last tick would need commands beyond the bag
    ep = ds.episode(0)
    frames = ds.frames(0, "front")
    assert frames.shape == (n, 48, 64, 3)
    # frame k shows image k (red = 5 * k) with the blue square at rows/cols 10-19
    np.testing.assert_allclose(frames[:, 30, 40, 0], 5 * np.arange(n), atol=4)
    assert frames[:, 15, 15, 2].min() > 200 and frames[:, 30, 40, 2].max() < 20
    # action k is the command sent during frame k (at t_k + 80 ms at 50 Hz): command = state + 0.01
    with RosbagsReader(REF_BAG) as r:
        store = get_typestore(Stores.ROS2_JAZZY)
        cmds = {
            store.deserialize_cdr(raw, c.msgtype).header.stamp.sec * 10**9
            + store.deserialize_cdr(raw, c.msgtype).header.stamp.nanosec: store.deserialize_cdr(
                raw, c.msgtype
            ).position
            for c, _, raw in r.messages()
            if c.topic == "/joint_commands"
        }
    stamps = sorted(cmds)
    for k in range(n):
        expected = cmds[stamps[4 + 5 * k]]  # 50 Hz commands: index 5k + 4 is t_k + 80 ms
        np.testing.assert_allclose(ep.action[k], expected, atol=1e-6)
    assert ds.manifest.joint_names == JOINTS7


@needs_ref_bag
def test_convert_maps_topics_and_names_what_is_missing(tmp_path):
    target = DatasetTarget(tmp_path / "ds", state_names=(), action_names=())
    with pytest.raises(ConversionError, match="/wrist"):
        convert_bag(REF_BAG, target, TopicMap(cameras={"front": "/camera/image_raw", "wrist": "/wrist"}))
    with pytest.raises(ConversionError, match="expected sensor_msgs/msg/JointState"):
        convert_bag(
            REF_BAG, target, TopicMap(state="/camera/image_raw", cameras={"front": "/task_instruction"})
        )
    # the commands as state and vice versa, joints taken from the messages
    result, _ = convert_bag(
        REF_BAG, target, TopicMap(state="/joint_commands", action="/joint_states"), default_task="swap"
    )
    assert result.summary is not None
    ds = LeRobotV3Dataset(tmp_path / "ds")
    assert ds.features["observation.state"]["names"] == list(JOINTS7)


def test_convert_our_own_bag_with_a_remapped_camera(tmp_path):
    bag = write_demo_bag(tmp_path / "bag", seconds=3.0)
    target = DatasetTarget(tmp_path / "ds", state_names=JOINTS7, action_names=JOINTS7)
    result, _ = convert_bag(bag, target, TopicMap(cameras={"wrist": "/cam"}))
    ds = LeRobotV3Dataset(tmp_path / "ds")
    assert result.summary.length == ds.episodes[0].length == 29 and ds.camera_names == ("wrist",)
    assert ds.tasks == ["stack it"]
    k = 5 * np.arange(29)  # 50 Hz steps at each 10 fps tick; images exist at even steps, red = step
    np.testing.assert_allclose(ds.frames(0, "wrist")[:, 0, 0, 0], k - k % 2, atol=4)
    np.testing.assert_allclose(ds.episode(0).state[:, 0], 0.01 * 5 * np.arange(29), atol=1e-5)
