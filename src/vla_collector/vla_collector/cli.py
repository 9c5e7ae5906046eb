"""vla-dataset: inspect, check, convert, replay, export and plot LeRobotDataset v3.0 datasets and bags.

    vla-dataset info ROOT
    vla-dataset validate ROOT [--no-video]
    vla-dataset stats ROOT [--feature observation.state]
    vla-dataset convert BAG [BAG ...] -o ROOT [--camera front=/camera/image_raw ...] [--state-topic T]
                        [--action-topic T] [--instruction-topic T] [--task TEXT] [--fps 10] [--joints a,b,...]
                        [--environment-state auto|on|off] [--object-poses-topic T] [--scene-topic T]
    vla-dataset replay ROOT|BAG [--episode N] [--rate 2.0] [--loop]
    vla-dataset export-video ROOT --episode N [--camera front] -o out.mp4
    vla-dataset plot ROOT --episode N -o joints.png

Exit status: 0 ok, 1 the dataset has problems (validate) or an episode was refused (convert), 2 usage or
input errors (with a message saying what is wrong).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm
from vla_common.features import ACTION_KEY, ENVIRONMENT_STATE_KEY, IMAGE_PREFIX, STATE_KEY
from vla_common.manifest import ManifestError

from vla_collector.bag import BagError, BagReader
from vla_collector.collector import EPISODE_FILE
from vla_collector.episode import ConversionError, DatasetTarget, TopicMap, convert_bag
from vla_collector.lerobot import (
    STAT_NAMES,
    DatasetError,
    LeRobotV3Dataset,
    LeRobotV3Writer,
    VideoCodecConfig,
)
from vla_collector.sampler import SamplerConfig


class CliError(Exception):
    """A usage or input problem: printed, exit status 2."""


# --- info / stats ----------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    ds = LeRobotV3Dataset(args.root)
    info = ds.info
    print(f"dataset      {ds.root}")
    print(
        f"format       LeRobotDataset {info['codebase_version']}, robot {info.get('robot_type')}, {ds.fps} fps"
    )
    print(f"episodes     {ds.num_episodes} ({ds.num_frames} frames, {ds.num_frames / ds.fps:.1f} s)")
    print(f"tasks        {len(ds.tasks)}")
    for i, task in enumerate(ds.tasks):
        n = sum(1 for e in ds.episodes if task in e.tasks)
        print(f"  [{i}] {task!r} ({n} episodes)")
    print("features")
    for key, feat in ds.features.items():
        extra = ""
        if feat.get("dtype") == "video":
            vi = feat.get("info", {})
            extra = f" {vi.get('video.codec')} {vi.get('video.pix_fmt')}"
        names = feat.get("names")
        shown = f" {names}" if names and feat.get("dtype") != "video" else ""
        print(f"  {key:32s} {feat['dtype']:8s} {feat['shape']}{extra}{shown}")
    if ds.episodes:
        lengths = [e.length for e in ds.episodes]
        print(f"lengths      min {min(lengths)}  mean {np.mean(lengths):.1f}  max {max(lengths)} frames")
    try:
        m = ds.manifest
        src = (
            "meta/embodiment.json"
            if (ds.root / "meta" / "embodiment.json").is_file()
            else "derived from info.json"
        )
        print(f"manifest     {m.action_type.value}, joints {list(m.joint_names)} ({src})")
    except ManifestError as e:
        print(f"manifest     INVALID: {e}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    ds = LeRobotV3Dataset(args.root)
    stats = ds.stats
    if not stats:
        raise CliError(f"{args.root} has no meta/stats.json")
    keys = [args.feature] if args.feature else list(stats)
    for key in keys:
        if key not in stats:
            raise CliError(f"no statistics for {key!r} (have {sorted(stats)})")
        feat = stats[key]
        print(f"{key}  (count {int(np.asarray(feat['count']).reshape(-1)[0])})")
        names = ds.features.get(key, {}).get("names")
        rows = np.asarray(feat["mean"]).reshape(-1)
        labels = (
            names
            if isinstance(names, list) and len(names) == len(rows) and key not in ds.camera_names
            else None
        )
        if key.startswith(IMAGE_PREFIX):
            labels = ["r", "g", "b"]
        header = "".join(f"{s:>10s}" for s in STAT_NAMES if s != "count")
        print(f"  {'':22s}{header}")
        for i in range(len(rows)):
            label = labels[i] if labels else str(i)
            values = "".join(
                f"{float(np.asarray(feat[s]).reshape(-1)[i]):10.4f}"
                for s in STAT_NAMES
                if s != "count" and s in feat
            )
            print(f"  {label[:22]:22s}{values}")
    return 0


# --- validate --------------------------------------------------------------------------------------


def validate_dataset(root: Path, check_video: bool = True) -> list[str]:
    """Problems that would make LeRobot (or training) misread the dataset; empty when it is sound."""
    problems: list[str] = []
    try:
        ds = LeRobotV3Dataset(root)
    except DatasetError as e:
        return [str(e)]
    info = ds.info
    if info.get("total_episodes") != ds.num_episodes:
        problems.append(
            f"info.json total_episodes {info.get('total_episodes')} != {ds.num_episodes} episodes"
        )
    if info.get("total_frames") != ds.num_frames:
        problems.append(f"info.json total_frames {info.get('total_frames')} != {ds.num_frames} frames")
    if info.get("total_tasks") != len(ds.tasks):
        problems.append(f"info.json total_tasks {info.get('total_tasks')} != {len(ds.tasks)} tasks")
    for key in (
        STATE_KEY,
        ACTION_KEY,
        "timestamp",
        "frame_index",
        "episode_index",
        "index",
        "task_index",
    ):
        if key not in ds.features:
            problems.append(f"feature {key!r} missing from info.json")
    expected_start = 0
    iterator = tqdm(ds.episodes, desc="validate", unit="episode", disable=None, leave=False)
    for episode in iterator:
        where = f"episode {episode.index}"
        if (
            episode.dataset_from_index != expected_start
            or episode.dataset_to_index != expected_start + episode.length
        ):
            problems.append(
                f"{where}: index range [{episode.dataset_from_index}, {episode.dataset_to_index}) is not contiguous"
            )
        expected_start = episode.dataset_from_index + episode.length
        try:
            arrays = ds.episode(episode.index)
        except DatasetError as err:
            problems.append(f"{where}: {err}")
            continue
        if arrays.frame_index.tolist() != list(range(episode.length)):
            problems.append(f"{where}: frame_index is not 0..{episode.length - 1}")
        if not np.allclose(arrays.timestamp, arrays.frame_index / ds.fps, atol=1e-4):
            problems.append(f"{where}: timestamps are not frame_index / fps")
        if arrays.index.tolist() != list(range(episode.dataset_from_index, episode.dataset_to_index)):
            problems.append(f"{where}: global index does not match meta/episodes")
        vectors = [(STATE_KEY, arrays.state), (ACTION_KEY, arrays.action)]
        if arrays.environment_state is not None:
            vectors.append((ENVIRONMENT_STATE_KEY, arrays.environment_state))
        for name, values in vectors:
            if not np.isfinite(values).all():
                problems.append(f"{where}: {name} has NaN/inf")
        if check_video:
            for cam in ds.camera_names:
                try:
                    ds.frames(episode.index, cam)
                except (DatasetError, OSError, ValueError) as err:
                    problems.append(f"{where} camera {cam}: {err}")
    stats = ds.stats
    for key, feat in ds.features.items():
        if key not in stats:
            problems.append(f"meta/stats.json lacks {key}")
        elif feat.get("dtype") != "video" and np.asarray(stats[key]["mean"]).shape != tuple(feat["shape"]):
            problems.append(f"meta/stats.json {key} mean has shape {np.asarray(stats[key]['mean']).shape}")
    try:
        manifest = ds.manifest
        names = tuple(ds.features.get(STATE_KEY, {}).get("names") or ())
        if manifest.joint_names != names:
            problems.append(
                f"manifest joints {list(manifest.joint_names)} != observation.state names {list(names)}"
            )
        if not math.isclose(manifest.fps, ds.fps):
            problems.append(f"manifest fps {manifest.fps} != dataset fps {ds.fps}")
    except ManifestError as e:
        problems.append(f"embodiment manifest: {e}")
    if (Path(root) / ".staging").exists():
        problems.append(
            ".staging/ exists: a writer crashed or is running (opening it for writing repairs it)"
        )
    return problems


def cmd_validate(args: argparse.Namespace) -> int:
    problems = validate_dataset(Path(args.root), check_video=not args.no_video)
    if problems:
        print(f"{args.root}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  - {p}")
        return 1
    ds = LeRobotV3Dataset(args.root)
    print(f"{args.root}: OK ({ds.num_episodes} episodes, {ds.num_frames} frames)")
    return 0


# --- convert ---------------------------------------------------------------------------------------


def _parse_cameras(specs: Sequence[str] | None) -> dict[str, str]:
    if not specs:
        return {"front": "/camera/image_raw"}
    cameras = {}
    for spec in specs:
        name, sep, topic = spec.partition("=")
        if not sep or not name or not topic.startswith("/"):
            raise CliError(f"--camera expects NAME=/topic, got {spec!r}")
        cameras[name] = topic
    return cameras


_RECORDED_TIMING = (
    "state_max_age_s",
    "camera_max_age_s",
    "action_max_age_s",
    "action_lookahead_s",
    "max_wait_s",
    "environment_max_age_s",
)


def _recorded_sampler(recorded: dict[str, Any], base: SamplerConfig) -> SamplerConfig:
    """For a bag collector_node wrote at the same fps: its timing rules (ages, lookahead, max_wait), so the
    conversion samples as the live recorder did; fps, cameras and the verdict tolerances stay the command's."""
    live = recorded.get("sampler") or {}
    if int(live.get("fps", 0)) != base.fps:
        return base
    return dataclasses.replace(base, **{k: live[k] for k in _RECORDED_TIMING if live.get(k) is not None})


def _convert_environment_state(args: argparse.Namespace) -> bool:
    """on/off as asked; auto: what the output dataset has, or for a new one whether the first bag holds the
    simulator's object poses and scene description."""
    if args.environment_state != "auto":
        return bool(args.environment_state == "on")
    info = Path(args.output) / "meta" / "info.json"
    if info.is_file():
        return ENVIRONMENT_STATE_KEY in json.loads(info.read_text()).get("features", {})
    available = BagReader(args.bags[0]).topics()
    return args.object_poses_topic in available and args.scene_topic in available


def cmd_convert(args: argparse.Namespace) -> int:
    environment = _convert_environment_state(args)
    topics = TopicMap(
        state=args.state_topic,
        action=args.action_topic,
        cameras=_parse_cameras(args.camera),
        instruction=args.instruction_topic,
        object_poses=args.object_poses_topic if environment else "",
        scene=args.scene_topic if environment else "",
    )
    joints = tuple(j for j in (args.joints or "").split(",") if j)
    actions = tuple(j for j in (args.action_joints or "").split(",") if j)
    target = DatasetTarget(
        root=Path(args.output),
        fps=args.fps,
        robot_type=args.robot_type,
        state_names=joints,
        action_names=actions,
        video=VideoCodecConfig(codec=args.codec, crf=args.crf),
    )
    sampler = SamplerConfig(
        fps=args.fps,
        cameras=tuple(topics.cameras),
        rate_tolerance=args.rate_tolerance,
        max_gap_s=args.max_gap,
        environment=environment,
    )
    writer = LeRobotV3Writer.open(target.root) if (target.root / "meta" / "info.json").is_file() else None
    refused = 0
    for bag in args.bags:
        # A bag written by collector_node knows its episode start and task: ticks land where they did live.
        episode_file = Path(bag) / EPISODE_FILE
        recorded = json.loads(episode_file.read_text()) if episode_file.is_file() else {}
        total = sum(
            t.message_count for name, t in BagReader(bag).topics().items() if name in topics.recorded_topics()
        )
        with tqdm(total=total, desc=Path(bag).name, unit="msg", disable=None, leave=False) as bar:
            result, writer = convert_bag(
                bag,
                target,
                topics,
                sampler_config=_recorded_sampler(recorded, sampler),
                default_task=args.task or recorded.get("task", ""),
                writer=writer,
                write_refused=args.write_refused,
                start_ns=int(recorded.get("start_ns", 0)),
                stop_ns=int(recorded.get("stop_ns", 0)),
                progress=bar.update,
            )
        if result.summary is None:
            refused += 1
            print(f"{bag}: REFUSED: {result.report.summary()}")
        else:
            print(f"{bag}: episode {result.summary.episode_index}: {result.report.summary()}")
    return 1 if refused else 0


# --- export-video / plot -----------------------------------------------------------------------------


def cmd_export_video(args: argparse.Namespace) -> int:
    import av

    ds = LeRobotV3Dataset(args.root)
    camera = args.camera or (ds.camera_names[0] if ds.camera_names else None)
    if camera is None:
        raise CliError(f"{args.root} has no cameras")
    length = ds.episodes[args.episode].length if 0 <= args.episode < ds.num_episodes else 0
    if not length:
        raise CliError(f"episode {args.episode} does not exist ({ds.num_episodes} episodes)")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream(args.codec, rate=ds.fps, options={"crf": str(args.crf)})
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, ds.fps)
        count = 0
        for rgb in tqdm(
            ds.iter_frames(args.episode, camera), total=length, desc="export", unit="frame", disable=None
        ):
            if count == 0:
                stream.width, stream.height = rgb.shape[1], rgb.shape[0]
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = count
            count += 1
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    print(f"{out}: {count} frames of episode {args.episode} camera {camera} at {ds.fps} fps ({args.codec})")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds = LeRobotV3Dataset(args.root)
    ep = ds.episode(args.episode)
    names = ds.features[STATE_KEY].get("names") or [str(i) for i in range(ep.state.shape[1])]
    action_names = ds.features[ACTION_KEY].get("names") or names
    n = ep.state.shape[1]
    cols = 2
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(11, 2.2 * rows), sharex=True, squeeze=False)
    for i in range(n):
        ax = axes[i // cols][i % cols]
        ax.plot(ep.timestamp, ep.state[:, i], label="state", lw=1.5)
        if names[i] in action_names:
            ax.plot(ep.timestamp, ep.action[:, action_names.index(names[i])], "--", label="action", lw=1.2)
        ax.set_title(names[i], fontsize=9)
        ax.grid(alpha=0.3)
    for j in range(n, rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("time [s]")
    task = ep.tasks[0] if ep.tasks else ""
    fig.suptitle(f"{ds.root.name} episode {args.episode}: {task}", fontsize=11)
    fig.tight_layout()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=args.dpi)
    plt.close(fig)
    print(f"{out}: {n} joints over {len(ep)} frames")
    return 0


# --- replay ----------------------------------------------------------------------------------------


def _message_class(msg_type: str) -> Any:
    package, _, name = msg_type.partition("/msg/")
    if not name:
        raise CliError(f"cannot replay type {msg_type!r}")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise CliError(f"message type {msg_type} is not installed") from None


def cmd_replay(args: argparse.Namespace) -> int:
    if args.rate <= 0:
        raise CliError("--rate must be positive")
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from rosgraph_msgs.msg import Clock

    source = Path(args.source)
    is_dataset = (source / "meta" / "info.json").is_file()
    rclpy.init(args=args.ros_args)
    node = rclpy.create_node("vla_dataset_replay")
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    clock_pub = node.create_publisher(Clock, "/clock", 10)
    published = 0
    try:
        while True:
            if is_dataset:
                published += _replay_dataset(
                    node, source, args, clock_pub, latched=latched, image_qos=qos_profile_sensor_data
                )
            else:
                published += _replay_bag(node, source, args, clock_pub)
            if not args.loop:
                break
            args.wait_s = 0.0
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"replayed {published} messages from {source}")
    return 0


def _wait_for_subscribers(publishers: list[Any], timeout_s: float) -> None:
    """Up to ``timeout_s``, until some topic has a subscriber (then a moment for the others to match)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(p.get_subscription_count() > 0 for p in publishers):
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            return
        time.sleep(0.05)


def _sleep_until(start: float, offset_s: float, rate: float) -> None:
    delay = start + offset_s / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _replay_dataset(
    node: Any, root: Path, args: argparse.Namespace, clock_pub: Any, *, latched: Any, image_qos: Any
) -> int:
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    from vla_perception.codec import numpy_to_image

    ds = LeRobotV3Dataset(root)
    if not 0 <= args.episode < ds.num_episodes:
        raise CliError(f"episode {args.episode} does not exist ({ds.num_episodes} episodes)")
    ep = ds.episode(args.episode)
    frames = {cam: ds.frames(args.episode, cam) for cam in ds.camera_names}
    camera_topics = (
        _parse_cameras(args.camera) if args.camera else {c: f"/replay/{c}/image_raw" for c in frames}
    )
    camera_topics = {c: camera_topics.get(c, f"/replay/{c}/image_raw") for c in frames}
    state_names = list(ds.features[STATE_KEY]["names"])
    action_names = list(ds.features[ACTION_KEY]["names"])
    state_pub = node.create_publisher(JointState, args.state_topic, 50)
    action_pub = node.create_publisher(JointState, args.action_topic, 50)
    image_pubs = {c: node.create_publisher(Image, t, image_qos) for c, t in camera_topics.items()}
    task_pub = node.create_publisher(String, args.instruction_topic, latched)
    task_pub.publish(String(data=ep.tasks[0] if ep.tasks else ""))
    _wait_for_subscribers([state_pub, action_pub, *image_pubs.values()], args.wait_s)
    base_ns = args.start_time_ns
    start = time.monotonic()
    count = 1
    for k in tqdm(range(len(ep)), desc=f"episode {args.episode}", unit="frame", disable=None):
        t = float(ep.timestamp[k])
        _sleep_until(start, t, args.rate)
        ns = base_ns + round(t * 1e9)
        stamp = Time(sec=ns // 10**9, nanosec=ns % 10**9)
        clock_pub.publish(Clock(clock=stamp))
        state = JointState(name=state_names, position=[float(v) for v in ep.state[k]])
        state.header.stamp = stamp
        state_pub.publish(state)
        action = JointState(name=action_names, position=[float(v) for v in ep.action[k]])
        action.header.stamp = stamp
        action_pub.publish(action)
        for cam, pub in image_pubs.items():
            pub.publish(numpy_to_image(frames[cam][k], "rgb8", stamp, cam))
        count += 3 + len(image_pubs)
    return count


def _replay_bag(node: Any, path: Path, args: argparse.Namespace, clock_pub: Any) -> int:
    from builtin_interfaces.msg import Time
    from rosgraph_msgs.msg import Clock

    reader = BagReader(path)
    publishers = {
        topic: node.create_publisher(_message_class(info.msg_type), topic, 50)
        for topic, info in reader.topics().items()
        if topic != "/clock"
    }
    total = sum(info.message_count for info in reader.topics().values())
    _wait_for_subscribers(list(publishers.values()), args.wait_s)
    start = time.monotonic()
    first: int | None = None
    count = 0
    for m in tqdm(reader.messages(), total=total, desc=path.name, unit="msg", disable=None):
        if m.topic not in publishers:
            continue
        first = m.log_time_ns if first is None else first
        _sleep_until(start, (m.log_time_ns - first) / 1e9, args.rate)
        clock_pub.publish(Clock(clock=Time(sec=m.log_time_ns // 10**9, nanosec=m.log_time_ns % 10**9)))
        publishers[m.topic].publish(m.data)  # raw CDR, exactly as recorded
        count += 1
    return count


# --- entry point -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vla-dataset", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="summary of a dataset")
    p.add_argument("root")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("validate", help="check a dataset's consistency (exit 1 on problems)")
    p.add_argument("root")
    p.add_argument("--no-video", action="store_true", help="skip decoding every video frame")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("stats", help="print normalization statistics")
    p.add_argument("root")
    p.add_argument("--feature", help="one feature, e.g. observation.state")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("convert", help="rosbag2 MCAP bag(s) -> LeRobot v3 episodes (one per bag)")
    p.add_argument("bags", nargs="+", help="bag directories (with metadata.yaml) or .mcap files")
    p.add_argument("-o", "--output", required=True, help="dataset root (created, or appended to)")
    p.add_argument(
        "--camera", action="append", metavar="NAME=TOPIC", help="camera name and Image topic (repeat)"
    )
    p.add_argument("--state-topic", default="/joint_states")
    p.add_argument("--action-topic", default="/joint_commands")
    p.add_argument("--instruction-topic", default="/task_instruction", help="'' to ignore")
    p.add_argument("--task", default="", help="task text when the bag has no instruction")
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--joints", help="comma-separated state joints in order (default: from the first message)")
    p.add_argument("--action-joints", help="comma-separated action joints (default: --joints)")
    p.add_argument("--robot-type", default="panda")
    p.add_argument("--codec", default="libsvtav1", choices=["libsvtav1", "libx264"])
    p.add_argument("--crf", type=int, default=30)
    p.add_argument("--rate-tolerance", type=float, default=0.05)
    p.add_argument("--max-gap", type=float, default=0.5, help="seconds a stream may be silent")
    p.add_argument("--write-refused", action="store_true", help="write episodes out of tolerance anyway")
    p.add_argument(
        "--environment-state",
        choices=["auto", "on", "off"],
        default="auto",
        help="write observation.environment_state from a simulator's object poses and scene description "
        "(auto: as the output dataset has it; for a new one, if the first bag holds both topics)",
    )
    p.add_argument("--object-poses-topic", default="/sim/object_poses")
    p.add_argument("--scene-topic", default="/sim/scene")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("replay", help="publish an episode (dataset) or a bag back on topics, with /clock")
    p.add_argument("source", help="dataset root or bag")
    p.add_argument("--episode", type=int, default=0)
    p.add_argument("--rate", type=float, default=1.0, help="1.0 real time, 2.0 twice as fast")
    p.add_argument("--loop", action="store_true")
    p.add_argument("--camera", action="append", metavar="NAME=TOPIC", help="dataset replay: camera topics")
    p.add_argument("--state-topic", default="/joint_states")
    p.add_argument("--action-topic", default="/joint_commands")
    p.add_argument("--instruction-topic", default="/task_instruction")
    p.add_argument("--start-time-ns", type=int, default=0, help="dataset replay: /clock at frame 0")
    p.add_argument("--wait-s", type=float, default=2.0, help="wait up to this long for a subscriber first")
    p.add_argument("--ros-args", nargs=argparse.REMAINDER, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("export-video", help="one episode's camera as an H.264 mp4")
    p.add_argument("root")
    p.add_argument("--episode", type=int, required=True)
    p.add_argument("--camera")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--codec", default="libx264", choices=["libx264", "libsvtav1"])
    p.add_argument("--crf", type=int, default=20)
    p.set_defaults(func=cmd_export_video)

    p = sub.add_parser("plot", help="joint state and action against time, as PNG")
    p.add_argument("root")
    p.add_argument("--episode", type=int, required=True)
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--dpi", type=int, default=100)
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "ros_args", None) is not None:
        args.ros_args = ["--ros-args", *args.ros_args]
    try:
        return int(args.func(args))
    except (CliError, DatasetError, BagError, ConversionError, ManifestError, FileNotFoundError) as e:
        print(f"vla-dataset {args.command}: {e}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as e:
        print(f"vla-dataset {args.command}: invalid JSON: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (silence the interpreter's final flush)
        return 0


if __name__ == "__main__":
    sys.exit(main())
