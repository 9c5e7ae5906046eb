"""Packing episodes into shared files (LeRobot's data_files_size_in_mb / video_files_size_in_mb / chunks_size),
read through the same reader as LeRobot's own dataset, and the crash safety of appending to a shared file."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import vla_collector.lerobot.reader as reader_module
import vla_collector.lerobot.writer as writer_module
import vla_common.atomic as atomic_module
from vla_collector.lerobot import (
    DATA_PATH,
    EPISODES_PATH,
    VIDEO_PATH,
    DatasetError,
    DatasetSpec,
    DatasetWriteError,
    LeRobotV3Dataset,
    LeRobotV3Writer,
    VideoCodecConfig,
    read_tasks,
)
from vla_common.manifest import CameraSpec
from vla_common.testing import shared_fixtures

HERE = Path(__file__).parent
FIXTURE = shared_fixtures(__file__) / "lerobot_v3_reference"
needs_fixture = pytest.mark.skipif(
    not FIXTURE.is_dir(), reason="shared/fixtures/lerobot_v3_reference not present"
)
JOINTS = (*(f"panda_joint{i}" for i in range(1, 8)), "gripper")
FIXTURE_TASKS = ("pick up the red block", "put the red block on the blue block", "pick up the red block")
CAMERAS = ("front", "wrist")
KIB = 1024 / 2**20  # 1 KiB in LeRobot's MB


def spec(**overrides) -> DatasetSpec:
    fields = dict(
        fps=10,
        robot_type="panda",
        state_names=JOINTS,
        action_names=JOINTS,
        cameras=(CameraSpec("front", 64, 64), CameraSpec("wrist", 48, 64)),
    )
    fields.update(overrides)
    return DatasetSpec(**fields)


def episode(ep: int, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fixture's content: front pixel channel ep % 3 = 40 + 15 * frame (others 0), wrist grey 10 * frame."""
    state = np.random.default_rng(ep).normal(0, 0.1, (n, 8)).astype(np.float32)
    front = np.zeros((n, 64, 64, 3), np.uint8)
    front[:, :, :, ep % 3] = (40 + 15 * np.arange(n)).clip(0, 255)[:, None, None]
    wrist = np.broadcast_to((10 * np.arange(n)).astype(np.uint8)[:, None, None, None], (n, 48, 64, 3))
    return state, {"front": front, "wrist": wrist}


def write(writer: LeRobotV3Writer, ep: int, n: int, task: str) -> None:
    state, images = episode(ep, n)
    writer.write_episode(state, state + 0.01, images, task)


def check_episodes(ds: LeRobotV3Dataset, lengths, tasks, states=None) -> None:
    """What a reader must see in a dataset of `episode()` content, however it is packed."""
    assert [e.length for e in ds.episodes] == list(lengths)
    assert ds.num_frames == sum(lengths) and ds.camera_names == CAMERAS
    start = 0
    for i, info in enumerate(ds.episodes):
        n = info.length
        ep = ds.episode(i)
        assert ep.state.shape == (n, 8) and ep.state.dtype == np.float32
        if states is not None:
            np.testing.assert_array_equal(ep.state, states[i])
        np.testing.assert_allclose(ep.action, ep.state + 0.01, atol=1e-6)
        np.testing.assert_allclose(ep.timestamp, np.arange(n) / 10, atol=1e-6)
        assert ep.frame_index.tolist() == list(range(n))
        assert ep.index.tolist() == list(range(start, start + n))
        assert (info.dataset_from_index, info.dataset_to_index) == (start, start + n)
        assert set(ep.tasks) == {tasks[i]}
        front = ds.frames(i, "front")  # exactly n frames, or it raises
        assert front.shape == (n, 64, 64, 3)
        np.testing.assert_allclose(front[:, 0, 0, i % 3], 40 + 15 * np.arange(n), atol=3)
        assert front[:, 0, 0, [c for c in range(3) if c != i % 3]].max() <= 3
        wrist = ds.frames(i, "wrist")
        assert wrist.shape == (n, 48, 64, 3)
        np.testing.assert_allclose(wrist[:, 24, 32, :], np.repeat(10 * np.arange(n)[:, None], 3, 1), atol=3)
        start += n


def _rows(root: Path) -> list[dict]:
    return pq.read_table(root / EPISODES_PATH).to_pylist()


def _snapshot(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@needs_fixture
def test_a_packed_multi_file_dataset_and_lerobots_own_read_the_same(tmp_path):
    # LeRobot's dataset: three episodes sharing one data file and one mp4 per camera.
    check_episodes(LeRobotV3Dataset(FIXTURE), (12, 13, 14), FIXTURE_TASKS)

    # Ours, with limits small enough for several files, several episodes per file, and two files per chunk.
    root = tmp_path / "ds"
    lengths = (12, 13, 14, 11, 14, 10, 13, 12)
    tasks = [FIXTURE_TASKS[i % 3] for i in range(len(lengths))]
    writer = LeRobotV3Writer.create(
        root, spec(data_files_size_in_mb=10 * KIB, video_files_size_in_mb=3 * KIB, chunks_size=2)
    )
    for ep, n in enumerate(lengths[:5]):
        write(writer, ep, n, tasks[ep])
    writer.close()
    writer = LeRobotV3Writer.open(root)  # appending after a reopen packs on where it left off
    assert writer.spec.data_files_size_in_mb == 10 * KIB and writer.spec.chunks_size == 2
    for ep, n in enumerate(lengths[5:], start=5):
        write(writer, ep, n, tasks[ep])
    ds = LeRobotV3Dataset(root)
    check_episodes(ds, lengths, tasks, states=[episode(ep, n)[0] for ep, n in enumerate(lengths)])

    rows = _rows(root)
    columns = [("data/chunk_index", "data/file_index")] + [
        (f"videos/observation.images.{c}/chunk_index", f"videos/observation.images.{c}/file_index")
        for c in CAMERAS
    ]
    for chunk_col, file_col in columns:
        files = [(r[chunk_col], r[file_col]) for r in rows]
        assert files == sorted(files), "episodes fill files in order"
        per_file = {f: files.count(f) for f in files}
        assert len(per_file) >= 3 and max(per_file.values()) >= 2, (chunk_col, per_file)
        assert any(c >= 1 for c, _ in per_file) and all(f < 2 for _, f in per_file), per_file
    for chunk, file in {(r["data/chunk_index"], r["data/file_index"]) for r in rows}:
        table = pq.read_table(root / DATA_PATH.format(chunk_index=chunk, file_index=file))
        mine = [r for r in rows if (r["data/chunk_index"], r["data/file_index"]) == (chunk, file)]
        assert sorted(set(table.column("episode_index").to_pylist())) == [r["episode_index"] for r in mine]
    for cam in CAMERAS:
        key = f"videos/observation.images.{cam}"
        by_file: dict[tuple[int, int], list[dict]] = {}
        for r in rows:
            by_file.setdefault((r[f"{key}/chunk_index"], r[f"{key}/file_index"]), []).append(r)
        for (chunk, file), mine in by_file.items():
            # from/to chain without a gap, exactly in frame periods, from 0 in each file ...
            frames_before = 0
            for r in mine:
                assert r[f"{key}/from_timestamp"] == frames_before / 10
                assert r[f"{key}/to_timestamp"] == (frames_before + r["length"]) / 10
                frames_before += r["length"]
            # ... and the mp4 holds exactly those frames at exactly k / fps.
            path = root / VIDEO_PATH.format(
                video_key=f"observation.images.{cam}", chunk_index=chunk, file_index=file
            )
            with av.open(str(path)) as container:
                times = [Fraction(f.pts) * f.time_base for f in container.decode(video=0)]
            assert times == [Fraction(k, 10) for k in range(frames_before)], path


@needs_fixture
def test_appending_to_lerobots_own_dataset_packs_into_its_files(tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(FIXTURE, root)
    writer = LeRobotV3Writer.open(root)
    assert writer.spec.video == VideoCodecConfig()  # av1, preset 12: the fixture's settings
    write(writer, 3, 11, "stack")
    ds = LeRobotV3Dataset(root)
    check_episodes(ds, (12, 13, 14, 11), (*FIXTURE_TASKS, "stack"))
    row = _rows(root)[3]
    assert (row["data/file_index"], row["videos/observation.images.front/file_index"]) == (0, 0)
    assert row["videos/observation.images.front/from_timestamp"] == 3.9
    assert row["videos/observation.images.front/to_timestamp"] == 5.0


def test_the_old_one_file_per_episode_layout_reads_and_appends(tmp_path):
    # What this writer wrote before it packed: file-NNN = episode NNN, while info.json said 100 / 200 MB.
    root = tmp_path / "ds"
    writer = LeRobotV3Writer.create(root, spec(data_files_size_in_mb=1e-6, video_files_size_in_mb=1e-6))
    for ep, n in enumerate((12, 13, 14)):
        write(writer, ep, n, FIXTURE_TASKS[ep])
    writer.close()
    assert [r["data/file_index"] for r in _rows(root)] == [0, 1, 2]
    assert [r["videos/observation.images.wrist/from_timestamp"] for r in _rows(root)] == [0.0] * 3
    info = json.loads((root / "meta/info.json").read_text())
    info.update(data_files_size_in_mb=100, video_files_size_in_mb=200)
    for feat in info["features"].values():
        if feat["dtype"] == "video":
            feat["info"].update({"video.codec": "av1", "video.preset": 12})
    (root / "meta/info.json").write_text(json.dumps(info))
    check_episodes(LeRobotV3Dataset(root), (12, 13, 14), FIXTURE_TASKS)
    writer = LeRobotV3Writer.open(root)
    write(writer, 3, 10, "stack")
    write(writer, 4, 11, "stack")
    check_episodes(LeRobotV3Dataset(root), (12, 13, 14, 10, 11), (*FIXTURE_TASKS, "stack", "stack"))
    assert [r["data/file_index"] for r in _rows(root)] == [0, 1, 2, 2, 2]  # the last file takes the new ones


def _two_episode_dataset(root: Path) -> LeRobotV3Writer:
    writer = LeRobotV3Writer.create(root, spec(video=VideoCodecConfig(codec="libx264")))
    write(writer, 0, 12, FIXTURE_TASKS[0])
    write(writer, 1, 13, FIXTURE_TASKS[1])
    return writer


@pytest.mark.parametrize(
    "where", ["while appending the video", "at the commit point", "at the commit point, without hard links"]
)
def test_a_failed_append_leaves_the_dataset_byte_for_byte_as_it_was(tmp_path, monkeypatch, where):
    root = tmp_path / "ds"
    writer = _two_episode_dataset(root)
    before = _snapshot(root)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where.endswith("without hard links"):  # the undo versions are then copies
        monkeypatch.setattr(writer_module.os, "link", disk_full)
    if where.startswith(
        "at the commit point"
    ):  # after every file was swapped in: the undo links put them back
        atomic = writer_module.write_bytes_atomic
        monkeypatch.setattr(
            writer_module,
            "write_bytes_atomic",
            lambda path, data: disk_full() if str(path).endswith(str(EPISODES_PATH)) else atomic(path, data),
        )
    else:
        monkeypatch.setattr(writer_module, "append_video", disk_full)
    with pytest.raises(DatasetWriteError, match="disk full"):
        write(writer, 2, 14, "a new task")
    after = _snapshot(root)
    assert after == before  # nothing committed, nothing half-written, no undo link or temporary file left
    monkeypatch.undo()
    write(writer, 2, 14, "a new task")  # and the writer goes on
    check_episodes(LeRobotV3Dataset(root), (12, 13, 14), (*FIXTURE_TASKS[:2], "a new task"))


KILL_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {here!r})
    from test_lerobot_packing import write
    import vla_collector.lerobot.writer as w
    from vla_collector.lerobot import EPISODES_PATH, LeRobotV3Writer

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    where = {where!r}
    if where == "mid-swap":  # the data file swapped in, the videos not yet
        w.fsync_dir = die
    elif where == "before-commit":  # every file swapped in, meta/episodes not yet replaced
        atomic = w.write_bytes_atomic
        w.write_bytes_atomic = lambda p, d: die() if str(p).endswith(str(EPISODES_PATH)) else atomic(p, d)
    else:  # committed, the undo links, the log and the derived metadata not yet dealt with
        w._Swap.finish = die
    write(LeRobotV3Writer.open({root!r}), 2, 14, "a new task")
    print("NOT KILLED")
    """
)


@pytest.mark.parametrize("where", ["mid-swap", "before-commit", "after-commit"])
def test_sigkill_while_appending_to_shared_files_loses_no_completed_episode(tmp_path, where):
    root = tmp_path / "ds"
    _two_episode_dataset(root)
    before = _snapshot(root)
    child = subprocess.run(
        [sys.executable, "-c", KILL_CHILD.format(here=str(HERE), root=str(root), where=where)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    committed = where == "after-commit"
    # Right after the kill, before any repair: every committed episode reads whole from the shared files.
    assert (root / ".staging" / "commit.json").is_file()
    lengths, tasks = (12, 13, 14) if committed else (12, 13), (*FIXTURE_TASKS[:2], "a new task")
    check_episodes(LeRobotV3Dataset(root), lengths, tasks)
    # Opening for writing finishes or undoes the interrupted commit.
    writer = LeRobotV3Writer.open(root)
    assert not (root / ".staging").exists()
    leftovers = [p for p in root.rglob(".*") if p.is_file() and p != root / ".lock"]
    assert not leftovers, "no undo link or temporary file is left"
    if committed:
        assert json.loads((root / "meta/info.json").read_text())["total_episodes"] == 3
    else:
        assert _snapshot(root) == before  # byte for byte, as before the append
    write(writer, len(lengths), 11, "stack")
    check_episodes(LeRobotV3Dataset(root), (*lengths, 11), (*tasks[: len(lengths)], "stack"))
    assert len({r["data/file_index"] for r in _rows(root)}) == 1  # still one shared file
    assert os.listdir(root / "videos/observation.images.front/chunk-000") == ["file-000.mp4"]


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()])
def test_an_error_right_after_the_commit_point_keeps_the_episode(tmp_path, monkeypatch, error):
    # meta/episodes is renamed into place, then its folder's fsync fails (or a Ctrl-C lands there): the
    # episode is in, so its rows, frames and task must stay (a rollback would leave it listed without them).
    root = tmp_path / "ds"
    writer = _two_episode_dataset(root)
    fsync_dir = atomic_module.fsync_dir

    def fails_after_the_rename(path):
        if Path(path) == root / EPISODES_PATH.parent:
            raise error
        fsync_dir(path)

    monkeypatch.setattr(atomic_module, "fsync_dir", fails_after_the_rename)
    if isinstance(error, OSError):
        with pytest.raises(DatasetWriteError, match="episode 2 was added"):
            write(writer, 2, 14, "a new task")
    else:
        with pytest.raises(KeyboardInterrupt):
            write(writer, 2, 14, "a new task")
    monkeypatch.undo()
    lengths, tasks = (12, 13, 14), (*FIXTURE_TASKS[:2], "a new task")
    check_episodes(LeRobotV3Dataset(root), lengths, tasks)
    assert not (root / ".staging").exists()
    assert not [p for p in root.rglob(".*.undo")], "the commit was finished: no undo link is left"
    write(writer, 3, 11, "stack")  # the writer goes on from the committed episode
    writer.close()
    LeRobotV3Writer.open(root).close()  # and a reopen finds nothing to repair or undo
    check_episodes(LeRobotV3Dataset(root), (*lengths, 11), (*tasks, "stack"))
    assert json.loads((root / "meta/info.json").read_text())["total_episodes"] == 4


def test_a_failed_rollback_keeps_the_undo_log_for_open_to_finish(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    writer = _two_episode_dataset(root)
    before = _snapshot(root)
    atomic, replace = writer_module.write_bytes_atomic, os.replace

    def disk_full_at_the_commit_point(path, data):
        if str(path).endswith(str(EPISODES_PATH)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return atomic(path, data)

    def the_data_file_cannot_be_put_back(src, dst):
        if Path(src).name == ".file-000.parquet.undo":
            raise OSError(errno.EIO, "Input/output error")
        replace(src, dst)

    monkeypatch.setattr(writer_module, "write_bytes_atomic", disk_full_at_the_commit_point)
    monkeypatch.setattr(writer_module.os, "replace", the_data_file_cannot_be_put_back)
    with pytest.raises(DatasetWriteError, match=r"putting back data/chunk-000/file-000\.parquet .*undo log"):
        write(writer, 2, 14, "a new task")
    monkeypatch.undo()
    assert (root / ".staging/commit.json").is_file(), "the undo log is kept"
    with pytest.raises(DatasetError, match="open the dataset again"):
        write(writer, 2, 14, "a new task")  # its next commit would overwrite the log
    check_episodes(LeRobotV3Dataset(root), (12, 13), FIXTURE_TASKS[:2])  # readable meanwhile
    writer.close()
    writer = LeRobotV3Writer.open(root)  # puts the data file back by the log
    assert _snapshot(root) == before
    write(writer, 2, 14, "a new task")
    check_episodes(LeRobotV3Dataset(root), (12, 13, 14), (*FIXTURE_TASKS[:2], "a new task"))


def test_one_writer_per_root(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    writer = _two_episode_dataset(root)
    with pytest.raises(DatasetError, match=f"{root} is open for writing by another writer"):
        LeRobotV3Writer.open(root)
    with pytest.raises(DatasetError, match="another writer"):
        LeRobotV3Writer.open_or_create(root, writer.spec)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from vla_collector.lerobot import LeRobotV3Writer; LeRobotV3Writer.open({str(root)!r})",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode != 0 and "open for writing by another writer" in child.stderr, child.stderr
    # The danger: a second writer opening while the first commits would "repair" the commit in progress
    # (undo it by the live undo log) while the first goes on to list the episode.
    atomic = writer_module.write_bytes_atomic
    refused = []

    def a_second_writer_at_the_commit_point(path, data):
        if str(path).endswith(str(EPISODES_PATH)):
            with pytest.raises(DatasetError, match="another writer"):
                LeRobotV3Writer.open(root)
            refused.append(path)
        return atomic(path, data)

    monkeypatch.setattr(writer_module, "write_bytes_atomic", a_second_writer_at_the_commit_point)
    write(writer, 2, 14, "a new task")
    monkeypatch.undo()
    assert refused
    check_episodes(LeRobotV3Dataset(root), (12, 13, 14), (*FIXTURE_TASKS[:2], "a new task"))
    writer.close()
    with LeRobotV3Writer.open(root) as again:  # closing released the lock
        write(again, 3, 11, "stack")
    with pytest.raises(DatasetError, match="closed"):
        write(again, 4, 11, "stack")
    LeRobotV3Writer.open(root).close()


def _file_of(root: Path, row: dict, camera: str | None = None) -> Path:
    """The data file (camera None) or the camera's mp4 that an episode's meta/episodes row names."""
    if camera is None:
        return root / DATA_PATH.format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
    key = f"observation.images.{camera}"
    chunk, file = row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"]
    return root / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file)


def test_a_file_takes_no_more_episodes_once_it_is_the_size_ratio_times_the_new_one(tmp_path, monkeypatch):
    # Appending rewrites the file: without this, small episodes filling a 200 MiB mp4 cost O(n^2) writes.
    ratio = 2
    monkeypatch.setattr(writer_module, "APPEND_SIZE_RATIO", ratio)
    root = tmp_path / "ds"
    writer = LeRobotV3Writer.create(root, spec())  # LeRobot's 100 / 200 MiB limits: far away
    kinds = (None, *CAMERAS)  # the data file, each camera's mp4
    images = episode(0, 40)[1]  # frames enough and rows enough to outweigh each file's own metadata
    states = [episode(i, 40)[0] for i in range(8)]  # random: the rows do not compress into each other
    before = []  # per episode and kind: the last episode's file and its size before the episode
    for i, state in enumerate(states):  # the same size each time (almost: parquet's statistics vary)
        last = _rows(root)[-1] if i else None
        before.append(
            {k: (_file_of(root, last, k), _file_of(root, last, k).stat().st_size) for k in kinds}
            if last
            else {}
        )
        writer.write_episode(state, state + 0.01, images, "t")
    rows = _rows(root)
    for kind in kinds:
        files = [_file_of(root, r, kind) for r in rows]
        episode_size = before[1][kind][1]  # the first file, holding the first episode alone
        for i in range(1, len(rows)):
            last, size = before[i][kind]
            assert (files[i] == last) == (size <= ratio * episode_size), (kind, i, size, episode_size)
        per_file = [files.count(f) for f in dict.fromkeys(files)]
        assert len(per_file) >= 2 and max(per_file) >= 2, (kind, per_file)  # rolled over, and packed
    ds = LeRobotV3Dataset(root)
    for i in range(len(rows)):
        np.testing.assert_array_equal(ds.episode(i).state, states[i])
        assert len(ds.frames(i, "front")) == len(ds.frames(i, "wrist")) == 40


def test_a_commit_without_new_tasks_leaves_tasks_parquet_alone(tmp_path):
    root = tmp_path / "ds"
    writer = _two_episode_dataset(root)
    tasks = root / "meta/tasks.parquet"
    inode = tasks.stat().st_ino
    write(writer, 2, 11, FIXTURE_TASKS[0])
    assert tasks.stat().st_ino == inode, "not rewritten"
    write(writer, 3, 11, "stack")  # a new task: the commit swaps in the new version, once
    assert read_tasks(root) == [*FIXTURE_TASKS[:2], "stack"]
    check_episodes(LeRobotV3Dataset(root), (12, 13, 11, 11), (*FIXTURE_TASKS[:2], FIXTURE_TASKS[0], "stack"))


@needs_fixture
def test_reading_a_packed_file_indexes_it_once_in_any_row_order(tmp_path, monkeypatch):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(FIXTURE, root)
    data = root / DATA_PATH.format(chunk_index=0, file_index=0)
    table = pq.read_table(data)
    pq.write_table(table.take(np.random.default_rng(0).permutation(table.num_rows)), data)  # rows mixed up
    indexed = []

    class Counted(reader_module._DataFile):
        def __init__(self, table):
            indexed.append(table.num_rows)
            super().__init__(table)

    monkeypatch.setattr(reader_module, "_DataFile", Counted)
    check_episodes(LeRobotV3Dataset(root), (12, 13, 14), FIXTURE_TASKS)
    assert indexed == [39], "the file's episode_index column is indexed once, not scanned per episode"
