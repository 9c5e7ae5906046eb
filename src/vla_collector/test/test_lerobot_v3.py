"""LeRobotDataset v3.0: reading LeRobot's own fixture, and writing the same layout ourselves."""

import copy
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from vla_collector.lerobot import (
    DatasetError,
    DatasetSpec,
    DatasetWarning,
    ImageStatsAccumulator,
    LeRobotV3Dataset,
    LeRobotV3Writer,
    VideoCodecConfig,
    aggregate_stats,
    vector_stats,
)
from vla_common.features import ENVIRONMENT_STATE_KEY
from vla_common.manifest import ActionType, CameraSpec, EmbodimentManifest
from vla_common.testing import shared_fixtures

FIXTURE = shared_fixtures(__file__) / "lerobot_v3_reference"
needs_fixture = pytest.mark.skipif(
    not FIXTURE.is_dir(), reason="shared/fixtures/lerobot_v3_reference not present"
)

JOINTS = (*(f"panda_joint{i}" for i in range(1, 8)), "gripper")
TASKS = ("pick up the red block", "put the red block on the blue block", "pick up the red block")


def fixture_like(root: Path) -> LeRobotV3Writer:
    """Write, with our writer, the dataset the fixture README describes."""
    spec = DatasetSpec(
        fps=10,
        robot_type="panda",
        state_names=JOINTS,
        action_names=JOINTS,
        cameras=(CameraSpec("front", 64, 64), CameraSpec("wrist", 48, 64)),
    )
    writer = LeRobotV3Writer.create(root, spec)
    rng = np.random.default_rng(0)
    for ep, n in enumerate((12, 13, 14)):
        state = rng.normal(0, 0.1, (n, 8)).astype(np.float32)
        front = np.zeros((n, 64, 64, 3), np.uint8)
        front[:, :, :, ep % 3] = (40 + 15 * np.arange(n)).clip(0, 255)[:, None, None]
        wrist = np.broadcast_to((10 * np.arange(n)).astype(np.uint8)[:, None, None, None], (n, 48, 64, 3))
        writer.write_episode(state, state + 0.01, {"front": front, "wrist": wrist}, TASKS[ep])
    return writer


@needs_fixture
def test_reads_lerobots_own_dataset_exactly():
    ds = LeRobotV3Dataset(FIXTURE)
    assert ds.fps == 10 and ds.num_episodes == 3 and ds.num_frames == 39
    assert ds.tasks == ["pick up the red block", "put the red block on the blue block"]
    assert [e.length for e in ds.episodes] == [12, 13, 14]
    assert [e.tasks for e in ds.episodes] == [(t,) for t in TASKS]
    assert ds.camera_names == ("front", "wrist")
    for i, info in enumerate(ds.episodes):
        ep = ds.episode(i)
        assert ep.state.shape == (info.length, 8) and ep.state.dtype == np.float32
        np.testing.assert_allclose(ep.action, ep.state + 0.01, atol=1e-6)
        np.testing.assert_allclose(ep.timestamp, np.arange(info.length) / 10, atol=1e-6)
        assert list(ep.frame_index) == list(range(info.length))
        assert set(ep.tasks) == {TASKS[i]}
        front = ds.frames(i, "front")
        assert front.shape == (info.length, 64, 64, 3)
        expected = 40 + 15 * np.arange(info.length)
        np.testing.assert_allclose(front[:, 0, 0, i % 3], expected, atol=3)
        others = [c for c in range(3) if c != i % 3]
        assert front[:, 0, 0, others].max() <= 3
        wrist = ds.frames(i, "wrist")
        assert wrist.shape == (info.length, 48, 64, 3)
        np.testing.assert_allclose(
            wrist[:, 24, 32, :], np.repeat((10 * np.arange(info.length))[:, None], 3, 1), atol=3
        )
    assert not ds.has_environment_state and ds.environment_state_names == ()
    assert ds.episode(0).environment_state is None
    manifest = ds.manifest  # no embodiment.json in LeRobot's output: derived from info.json
    assert manifest.joint_names == JOINTS and manifest.fps == 10
    assert [c.name for c in manifest.cameras] == ["front", "wrist"]
    assert manifest.normalization["action"]["mean"] == pytest.approx(ds.stats["action"]["mean"].tolist())


def _schema(path: Path) -> dict[str, str]:
    return {f.name: str(f.type) for f in pq.read_schema(path)}


def _video_params(path: Path) -> tuple:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return (c.format.name, s.codec_context.name, s.codec_context.pix_fmt, s.average_rate, s.time_base)


@needs_fixture
def test_writer_output_matches_lerobots_layout(tmp_path):
    fixture_like(tmp_path / "ds")
    ours, ref = tmp_path / "ds", FIXTURE
    ours_info, ref_info = (json.loads((r / "meta/info.json").read_text()) for r in (ours, ref))
    assert list(ours_info) == list(ref_info)
    assert ours_info["features"] == ref_info["features"]
    for key in (
        "total_episodes",
        "total_frames",
        "total_tasks",
        "data_path",
        "video_path",
        "splits",
        "robot_type",
    ):
        assert ours_info[key] == ref_info[key], key
    # parquet schemas (fixed_size_list<float>[8]), the HF features key, episode metadata and tasks
    data = "data/chunk-000/file-000.parquet"
    assert _schema(ours / data) == _schema(ref / data)
    assert (
        json.loads(pq.read_schema(ours / data).metadata[b"huggingface"])["info"]
        == json.loads(pq.read_schema(ref / data).metadata[b"huggingface"])["info"]
    )
    episodes = "meta/episodes/chunk-000/file-000.parquet"
    assert _schema(ours / episodes) == _schema(ref / episodes)
    assert _schema(ours / "meta/tasks.parquet") == _schema(ref / "meta/tasks.parquet")
    assert pq.read_schema(ours / "meta/tasks.parquet").pandas_metadata["index_columns"] == ["task"]
    # stats: same features, stat names and shapes
    ours_stats, ref_stats = (json.loads((r / "meta/stats.json").read_text()) for r in (ours, ref))
    assert set(ours_stats) == set(ref_stats)
    for feat, stats in ref_stats.items():
        assert set(ours_stats[feat]) == set(stats), feat
        for name, value in stats.items():
            assert np.shape(ours_stats[feat][name]) == np.shape(value), (feat, name)
    assert ours_stats["observation.images.front"]["count"] == [39]
    # videos: container, codec, pixel format, rate
    for cam in ("front", "wrist"):
        ref_video = ref / f"videos/observation.images.{cam}/chunk-000/file-000.mp4"
        assert (
            _video_params(ours / f"videos/observation.images.{cam}/chunk-000/file-000.mp4")[:4]
            == (_video_params(ref_video)[:4])
        )
    # and it reads back with the contents it was given
    ds = LeRobotV3Dataset(ours)
    assert [e.length for e in ds.episodes] == [12, 13, 14]
    np.testing.assert_allclose(ds.frames(1, "front")[:, 0, 0, 1], 40 + 15 * np.arange(13), atol=3)
    np.testing.assert_allclose(ds.frames(2, "wrist")[:, 0, 0, 0], 10 * np.arange(14), atol=3)
    assert ds.episode(2).index.tolist() == list(range(25, 39))
    # image stats agree with LeRobot's numbers for the same content (its stats come from the same frames)
    np.testing.assert_allclose(
        ours_stats["observation.images.wrist"]["mean"],
        ref_stats["observation.images.wrist"]["mean"],
        atol=0.01,
    )
    assert ds.manifest == EmbodimentManifest.load(ours)
    assert ds.manifest.normalization_hash


def test_append_reopens_and_continues(tmp_path):
    fixture_like(tmp_path / "ds")
    writer = LeRobotV3Writer.open(tmp_path / "ds")
    assert writer.num_episodes == 3 and writer.num_frames == 39
    n = 5
    writer.write_episode(
        np.zeros((n, 8), np.float32),
        np.ones((n, 8), np.float32),
        {"front": np.zeros((n, 64, 64, 3), np.uint8), "wrist": np.zeros((n, 48, 64, 3), np.uint8)},
        ["stack"] * 2 + ["pick up the red block"] * 3,
    )
    ds = LeRobotV3Dataset(tmp_path / "ds")
    assert ds.num_episodes == 4 and ds.num_frames == 44
    assert ds.tasks == ["pick up the red block", "put the red block on the blue block", "stack"]
    assert ds.episode(3).task_index.tolist() == [2, 2, 0, 0, 0]
    assert json.loads((tmp_path / "ds/meta/info.json").read_text())["splits"] == {"train": "0:4"}


def test_repair_after_a_crash_between_payload_and_commit(tmp_path):
    fixture_like(tmp_path / "ds")
    root = tmp_path / "ds"
    # What a crash leaves: staged video, a data file and a video no episode names, a temp file, stale info.
    (root / ".staging/episode-000003").mkdir(parents=True)
    (root / ".staging/episode-000003/front.mp4").write_bytes(b"partial")
    orphan = root / "data/chunk-000/file-003.parquet"
    orphan.write_bytes((root / "data/chunk-000/file-000.parquet").read_bytes())
    (root / "videos/observation.images.front/chunk-000/file-003.mp4").write_bytes(b"x")
    (root / "meta/.info.json.abc.tmp").write_text("{")
    info = json.loads((root / "meta/info.json").read_text())
    info["total_episodes"] = 7
    (root / "meta/info.json").write_text(json.dumps(info))
    writer = LeRobotV3Writer.open(root)
    assert not orphan.exists() and not (root / ".staging").exists()
    assert not list((root / "meta").glob(".*.tmp"))
    assert json.loads((root / "meta/info.json").read_text())["total_episodes"] == 3
    assert writer.num_episodes == 3
    assert LeRobotV3Dataset(root).num_frames == 39


def test_bad_input_is_refused_with_clear_errors(tmp_path):
    writer = fixture_like(tmp_path / "ds")
    rec = writer.begin_episode()
    images = {"front": np.zeros((64, 64, 3), np.uint8), "wrist": np.zeros((48, 64, 3), np.uint8)}
    with pytest.raises(DatasetError, match="sizes"):
        rec.add_frame(np.zeros(7), np.zeros(8), images, "t")
    with pytest.raises(DatasetError, match="NaN"):
        rec.add_frame(np.full(8, np.nan), np.zeros(8), images, "t")
    with pytest.raises(DatasetError, match="front"):
        rec.add_frame(np.zeros(8), np.zeros(8), {**images, "front": np.zeros((64, 64), np.uint8)}, "t")
    with pytest.raises(DatasetError, match="cameras"):
        rec.add_frame(np.zeros(8), np.zeros(8), {"front": images["front"]}, "t")
    with pytest.raises(DatasetError, match="task"):
        rec.add_frame(np.zeros(8), np.zeros(8), images, "")
    with pytest.raises(DatasetError, match="already"):
        writer.begin_episode()
    with pytest.raises(DatasetError, match="at least one frame"):
        rec.finish()
    assert LeRobotV3Dataset(tmp_path / "ds").num_episodes == 3
    with pytest.raises(DatasetError, match="already holds"):
        LeRobotV3Writer.create(tmp_path / "ds", writer.spec)
    with pytest.raises(DatasetError, match="not a LeRobot dataset"):
        LeRobotV3Dataset(tmp_path / "nothing")
    with pytest.raises(DatasetError, match="even"):
        DatasetSpec(
            fps=10, robot_type="p", state_names=("a",), action_names=("a",), cameras=(CameraSpec("c", 3, 4),)
        )
    with pytest.raises(DatasetError, match="fps"):
        DatasetSpec(fps=0, robot_type="p", state_names=("a",), action_names=("a",))
    with pytest.raises(DatasetError, match="codec"):
        VideoCodecConfig(codec="mjpeg")
    with pytest.raises(DatasetError, match="does not exist"):
        LeRobotV3Dataset(tmp_path / "ds").episode(3)


def test_h264_option_and_manifest_with_units(tmp_path):
    spec = DatasetSpec(
        fps=15,
        robot_type="panda",
        state_names=("panda_joint1", "panda_finger_joint1"),
        action_names=("panda_joint1", "panda_finger_joint1"),
        cameras=(CameraSpec("front", 32, 32),),
        video=VideoCodecConfig(codec="libx264", g=4, crf=18),
        action_type=ActionType.ABSOLUTE_JOINT_POSITION,
    )
    writer = LeRobotV3Writer.create(tmp_path / "ds", spec)
    frames = np.stack([np.full((32, 32, 3), 8 * i, np.uint8) for i in range(9)])
    writer.write_episode(np.zeros((9, 2), np.float32), np.zeros((9, 2), np.float32), {"front": frames}, "t")
    ds = LeRobotV3Dataset(tmp_path / "ds")
    assert ds.features["observation.images.front"]["info"]["video.codec"] == "h264"
    np.testing.assert_allclose(ds.frames(0, "front")[:, 5, 5, 0], 8 * np.arange(9), atol=2)
    assert ds.manifest.joint_units == ("rad", "m") and ds.manifest.fps == 15


# x264 writes its settings into the stream (an SEI); subme is one that tells these presets apart.
X264_SUBME = {"veryfast": b"subme=2", "ultrafast": b"subme=0", "medium": b"subme=7"}


def _h264_dataset(root: Path, preset=None) -> LeRobotV3Writer:
    spec = DatasetSpec(
        fps=10,
        robot_type="panda",
        state_names=("a", "b"),
        action_names=("a", "b"),
        cameras=(CameraSpec("front", 32, 32),),
        video=VideoCodecConfig(codec="libx264", preset=preset),
    )
    return LeRobotV3Writer.create(root, spec)


def _write_small(writer: LeRobotV3Writer, n: int = 6) -> None:
    frames = np.stack([np.full((32, 32, 3), 20 * i, np.uint8) for i in range(n)])
    writer.write_episode(np.zeros((n, 2), np.float32), np.zeros((n, 2), np.float32), {"front": frames}, "t")


def _front_info(root: Path) -> dict:
    return json.loads((root / "meta/info.json").read_text())["features"]["observation.images.front"]["info"]


def _video_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((root / "videos").rglob("*.mp4")))


@pytest.mark.parametrize("preset", [None, "ultrafast"])
def test_h264_records_the_preset_it_encodes_with_and_reads_it_back(tmp_path, preset):
    root = tmp_path / "ds"
    writer = _h264_dataset(root, preset)
    _write_small(writer)
    used = preset or "veryfast"  # our x264 default
    assert _front_info(root)["video.preset"] == used  # a name LeRobot can re-encode with, not SVT-AV1's 12
    assert X264_SUBME[used] in _video_bytes(root)  # and the stream says it was encoded with it
    writer.close()  # one writer per root
    reopened = LeRobotV3Writer.open(root)  # the round trip: the spec read back is the one written
    assert reopened.spec.video == writer.spec.video and reopened.spec.video.preset == used
    _write_small(reopened)
    assert _front_info(root)["video.preset"] == used
    ds = LeRobotV3Dataset(root)
    np.testing.assert_allclose(ds.frames(1, "front")[:, 4, 4, 0], 20 * np.arange(6), atol=3)


def test_h264_datasets_with_a_null_preset_as_lerobot_writes_them_open_and_append(tmp_path):
    root = tmp_path / "ds"
    _write_small(_h264_dataset(root))
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.images.front"]["info"]["video.preset"] = None  # LeRobot 0.6.1's h264
    (root / "meta/info.json").write_text(json.dumps(info))
    writer = LeRobotV3Writer.open(root)
    assert writer.spec.video.preset == "medium"  # null = x264's own default, which LeRobot encoded with
    assert X264_SUBME["medium"] not in _video_bytes(root)
    _write_small(writer)
    assert X264_SUBME["medium"] in _video_bytes(root)  # the appended episode was encoded with it
    assert _front_info(root)["video.preset"] == "medium"
    # Another preset, other h264 parameter sets: the episode starts a new mp4 (the streams cannot share one)
    # while its rows join the data file.
    rows = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [(r["data/file_index"], r["videos/observation.images.front/file_index"]) for r in rows] == [
        (0, 0),
        (0, 1),
    ]
    ds = LeRobotV3Dataset(root)
    np.testing.assert_allclose(ds.frames(1, "front")[:, 4, 4, 0], 20 * np.arange(6), atol=3)


def test_appending_to_lerobots_h264_needs_its_preset_and_the_refusal_names_it(tmp_path):
    root = tmp_path / "ds"
    writer = _h264_dataset(root)
    _write_small(writer)
    writer.close()
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.images.front"]["info"]["video.preset"] = None  # LeRobot 0.6.1's h264
    (root / "meta/info.json").write_text(json.dumps(info))
    ours = replace(writer.spec, video=VideoCodecConfig(codec="libx264"))  # our default preset, veryfast
    with pytest.raises(
        DatasetError, match=r"preset 'medium'.* preset 'veryfast'.*video_codec:=libx264 video_preset:=medium"
    ):
        LeRobotV3Writer.open_or_create(root, ours)
    medium = replace(ours, video=VideoCodecConfig(codec="libx264", preset="medium"))
    with LeRobotV3Writer.open_or_create(root, medium) as appending:  # the refusal released the lock
        _write_small(appending)
    assert LeRobotV3Dataset(root).num_episodes == 2


@needs_fixture
def test_from_info_reads_null_int_and_string_presets():
    info = json.loads((FIXTURE / "meta/info.json").read_text())

    def video(codec: str, preset, **more) -> VideoCodecConfig:
        changed = copy.deepcopy(info)
        for feat in changed["features"].values():
            if feat["dtype"] == "video":
                feat["info"].update({"video.codec": codec, "video.preset": preset, **more})
        return DatasetSpec.from_info(changed).video

    assert video("av1", 12) == VideoCodecConfig()  # the fixture as LeRobot wrote it
    assert video("h264", None) == VideoCodecConfig(codec="libx264", preset="medium")  # LeRobot's own h264
    assert video("h264", "veryfast").preset == "veryfast"
    assert video("h264", "slow").preset == "slow"
    assert video("h264", 12).preset == "veryfast"  # what this writer recorded before: it encoded veryfast
    assert video("av1", None).preset == 12
    assert video("av1", 8).preset == 8 and video("av1", "8").preset == 8
    assert video("h264", None, **{"video.g": None, "video.crf": None}) == VideoCodecConfig(
        codec="libx264", preset="medium"
    )  # other settings LeRobot leaves null read as our defaults
    with pytest.raises(DatasetError, match="x264 preset"):
        video("h264", "warp")
    with pytest.raises(DatasetError, match="SVT-AV1 preset"):
        video("av1", "veryfast")
    with pytest.raises(DatasetError, match="x264 preset"):
        VideoCodecConfig(codec="libx264", preset=12)
    assert VideoCodecConfig().encoder_options()["preset"] == "12"
    assert VideoCodecConfig(codec="libx264").encoder_options()["preset"] == "veryfast"


@needs_fixture
def test_a_newer_lerobots_info_json_opens_with_a_warning_naming_the_unknown_fields(tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(FIXTURE, root)
    info = json.loads((root / "meta/info.json").read_text())
    info["storage_backend"] = {"kind": "parquet"}
    info["total_audio_files"] = 0
    info["features"]["observation.audio.mic"] = {"dtype": "audio", "shape": [1], "names": None}
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.warns(
        DatasetWarning, match=r"storage_backend, total_audio_files, features\.observation\.audio"
    ):
        ds = LeRobotV3Dataset(root)
    assert ds.unknown_fields == ("storage_backend", "total_audio_files", "features.observation.audio.mic")
    assert ds.num_episodes == 3 and ds.tasks == [
        "pick up the red block",
        "put the red block on the blue block",
    ]
    np.testing.assert_allclose(ds.frames(2, "front")[:, 0, 0, 2], 40 + 15 * np.arange(14), atol=3)
    np.testing.assert_allclose(ds.episode(1).action, ds.episode(1).state + 0.01, atol=1e-6)
    # Appending: a feature we do not write is refused, naming it ...
    with pytest.raises(DatasetError, match=r"does not write the features \['observation\.audio\.mic'\]"):
        LeRobotV3Writer.open(root)
    # ... unknown top-level fields are kept as they are, with the warning.
    del info["features"]["observation.audio.mic"]
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.warns(DatasetWarning, match="storage_backend, total_audio_files; kept"):
        writer = LeRobotV3Writer.open(root)
    n = 4
    writer.write_episode(
        np.zeros((n, 8), np.float32),
        np.zeros((n, 8), np.float32),
        {"front": np.zeros((n, 64, 64, 3), np.uint8), "wrist": np.zeros((n, 48, 64, 3), np.uint8)},
        "stack",
    )
    written = json.loads((root / "meta/info.json").read_text())
    assert written["storage_backend"] == {"kind": "parquet"} and written["total_audio_files"] == 0
    assert written["total_episodes"] == 4
    with pytest.warns(DatasetWarning, match="storage_backend"):
        assert LeRobotV3Dataset(root).num_episodes == 4


def test_a_codebase_version_other_than_v3_is_refused_naming_it(tmp_path):
    root = tmp_path / "ds"
    _write_small(_h264_dataset(root))
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    for version in ("v2.1", "v4.0", "3.0", None):
        info_path.write_text(json.dumps({**info, "codebase_version": version}))
        for open_it in (LeRobotV3Dataset, LeRobotV3Writer.open):
            with pytest.raises(
                DatasetError, match=rf"codebase_version {re.escape(repr(version))} is not supported"
            ):
                open_it(root)
    info_path.write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetError, match=r"v2\.1 -> v3\.0 converter"):
        LeRobotV3Dataset(root)
    # A later v3.x reads (the format is the same major version); appending to it is left to its own writer.
    info_path.write_text(json.dumps({**info, "codebase_version": "v3.1"}))
    assert LeRobotV3Dataset(root).num_episodes == 1
    with pytest.raises(DatasetError, match=r"'v3\.1': this writer appends to v3\.0 datasets only"):
        LeRobotV3Writer.open(root)


def test_statistics_helpers():
    acc = ImageStatsAccumulator()
    for v in (0, 255):
        acc.add(np.full((4, 4, 3), v, np.uint8))
    stats = acc.stats()
    assert stats["mean"].shape == (3, 1, 1) and stats["mean"][0, 0, 0] == pytest.approx(0.5)
    assert stats["std"][1, 0, 0] == pytest.approx(0.5) and stats["count"].tolist() == [2]
    a, b = vector_stats(np.zeros((10, 2))), vector_stats(np.ones((30, 2)))
    agg = aggregate_stats([{"x": a}, {"x": b}])["x"]
    assert agg["mean"] == pytest.approx([0.75, 0.75]) and agg["count"].tolist() == [40]
    assert agg["std"] == pytest.approx(np.std(np.r_[np.zeros(10), np.ones(30)]))
    assert agg["min"].tolist() == [0, 0] and agg["max"].tolist() == [1, 1]


ENV_NAMES = ("target.x", "target.y", "target.z", "goal.x", "goal.y", "goal.z")


def _env_spec(**overrides) -> DatasetSpec:
    fields = dict(
        fps=10,
        robot_type="panda",
        state_names=JOINTS,
        action_names=JOINTS,
        cameras=(CameraSpec("front", 16, 16),),
        video=VideoCodecConfig(codec="libx264"),
        environment_state_names=ENV_NAMES,
    )
    fields.update(overrides)
    return DatasetSpec(**fields)


def _episode(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = rng.normal(0, 0.1, (n, 8)).astype(np.float32)
    env = rng.uniform(-0.3, 0.7, (n, 6)).astype(np.float32)
    return state, state + 0.01, {"front": np.zeros((n, 16, 16, 3), np.uint8)}, env


def test_environment_state_round_trips_like_the_other_vector_features(tmp_path):
    root = tmp_path / "ds"
    writer = LeRobotV3Writer.create(root, _env_spec())
    episodes = [_episode(5, 0), _episode(7, 1)]
    state, action, images, env = episodes[0]
    writer.write_episode(state, action, images, "pick up the red block", environment_states=env)
    writer.close()
    # Appending through a reopened writer keeps the feature (the spec is rebuilt from info.json).
    writer = LeRobotV3Writer.open(root)
    assert writer.spec.environment_state_names == ENV_NAMES
    state, action, images, env = episodes[1]
    rec = writer.begin_episode()
    for i in range(len(state)):
        rec.add_frame(state[i], action[i], {"front": images["front"][i]}, "stack", environment_state=env[i])
    rec.finish()

    ds = LeRobotV3Dataset(root)
    assert ds.has_environment_state and ds.environment_state_names == ENV_NAMES
    feature = ds.features[ENVIRONMENT_STATE_KEY]
    assert feature == {"dtype": "float32", "shape": [6], "names": list(ENV_NAMES)}
    for i, (_, _, _, env) in enumerate(episodes):
        ep = ds.episode(i)
        assert ep.environment_state is not None and ep.environment_state.dtype == np.float32
        np.testing.assert_array_equal(ep.environment_state, env)
    # Stored like observation.state: a fixed-size float list column (with its HF feature), stats per episode
    # and over the dataset.
    data = root / "data/chunk-000/file-000.parquet"
    assert _schema(data)[ENVIRONMENT_STATE_KEY] == _schema(data)["observation.state"].replace("8", "6")
    hf = json.loads(pq.read_schema(data).metadata[b"huggingface"])["info"]["features"]
    assert hf[ENVIRONMENT_STATE_KEY]["length"] == 6
    everything = np.concatenate([e[3] for e in episodes])
    stats = ds.stats[ENVIRONMENT_STATE_KEY]
    np.testing.assert_allclose(stats["mean"], everything.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats["min"], everything.min(0), atol=1e-6)
    assert stats["count"].tolist() == [12]
    np.testing.assert_allclose(
        ds.episode_stats(1)[ENVIRONMENT_STATE_KEY]["max"], episodes[1][3].max(0), atol=1e-6
    )
    # The embodiment manifest is about the robot: the privileged state is not part of it.
    assert ENVIRONMENT_STATE_KEY not in ds.manifest.normalization


def test_datasets_without_environment_state_are_unchanged_and_refuse_to_mix(tmp_path):
    plain, with_env = tmp_path / "plain", tmp_path / "env"
    state, action, images, env = _episode(4, 2)
    LeRobotV3Writer.create(plain, _env_spec(environment_state_names=())).write_episode(
        state, action, images, "t"
    )
    ds = LeRobotV3Dataset(plain)
    assert not ds.has_environment_state and ds.episode(0).environment_state is None
    assert ENVIRONMENT_STATE_KEY not in ds.stats
    assert ENVIRONMENT_STATE_KEY not in {
        f.name for f in pq.read_schema(plain / "data/chunk-000/file-000.parquet")
    }
    with pytest.raises(DatasetError, match="refusing to mix"):
        LeRobotV3Writer.open_or_create(plain, _env_spec())
    LeRobotV3Writer.create(with_env, _env_spec()).write_episode(
        state, action, images, "t", environment_states=env
    )
    with pytest.raises(DatasetError, match="refusing to mix"):
        LeRobotV3Writer.open_or_create(with_env, _env_spec(environment_state_names=()))
    # Each frame carries the feature exactly when the dataset has it.
    rec = LeRobotV3Writer.open(with_env).begin_episode()
    frame = (state[0], action[0], {"front": images["front"][0]}, "t")
    with pytest.raises(DatasetError, match="every frame needs it"):
        rec.add_frame(*frame)
    with pytest.raises(DatasetError, match="5 values"):
        rec.add_frame(*frame, environment_state=env[0][:5])
    with pytest.raises(DatasetError, match="NaN"):
        rec.add_frame(*frame, environment_state=np.full(6, np.nan))
    rec.abort()
    rec = LeRobotV3Writer.open(plain).begin_episode()
    with pytest.raises(DatasetError, match=r"no observation\.environment_state"):
        rec.add_frame(*frame, environment_state=env[0])
    rec.abort()
    with pytest.raises(DatasetError, match="environment states"):
        LeRobotV3Writer.open(with_env).write_episode(state, action, images, "t", environment_states=env[:2])
    with pytest.raises(DatasetError, match="unique"):
        _env_spec(environment_state_names=("a", "a"))
