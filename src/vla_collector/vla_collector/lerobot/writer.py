"""Writing a LeRobotDataset v3.0: create or append, one episode at a time, crash-safe, with the atomic write
of ``vla_common.atomic``.

Packing, as LeRobot does it: an episode's rows go into the data file of the episode before it unless that
file would reach ``data_files_size_in_mb`` (then into the next file: file-NNN + 1 within chunk-NNN, a new
chunk after ``chunks_size`` files); each camera's mp4 likewise with ``video_files_size_in_mb``, the episode
at [from_timestamp, to_timestamp) = [frames before it in the file, + its length] / fps. Unlike LeRobot, a
file also takes no more episodes once it holds ``APPEND_SIZE_RATIO`` times the new episode's size (see there).

One writer per root: the writer holds an exclusive ``flock`` on ``<root>/.lock`` from create/open to
:meth:`LeRobotV3Writer.close`; a second writer is refused (its repair would undo the first one's commit).

Crash safety. Appending to a file means writing a new version of it, and nothing is ever written into a file
that committed episodes live in. A commit goes:

1. Each new file version is written whole under a temporary name beside its target and fsynced (the data
   file: old rows + the episode's; an mp4: the old packets + the episode's, remuxed; ``tasks.parquet``);
   a file the episode starts is its staged file as it is. A failure here (a full disk) removes them.
2. An undo log (``.staging/commit.json``: the episode count before, each target) is written atomically;
   each existing target gets a hard link ``.<name>.undo`` to its current version, then the new version is
   renamed over it. Every committed episode stays readable at every instant: a target holds its old
   version or a new one that extends it without moving anything.
3. ``meta/episodes`` is replaced atomically: the commit point. Then the undo links and the log go.

An error before the commit point puts every target back (rename the undo link over it; remove files the
episode started), so a failed commit leaves the dataset byte for byte as it was; if putting one back fails,
the log stays (opening the root for writing finishes the job) and the writer takes no more episodes. An
error at or after the commit point (the fsync of ``meta/episodes``' folder, a Ctrl-C) never rolls back: if
``meta/episodes`` on disk lists the episode, the commit is finished and the error raised after it. After a
SIGKILL or power cut, opening the root for writing reads the log: committed (more episodes than it says) ->
drop the undo links; not -> restore them. No completed episode is lost either way. Without hard links (some
file systems) the undo copy is a full copy. Appending rewrites the file, as LeRobot does; the size ratio
above bounds what one commit writes to about ``APPEND_SIZE_RATIO + 1`` times the episode's size.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from vla_common.atomic import fsync_dir, write_bytes_atomic, write_json_atomic
from vla_common.features import ACTION_KEY, ENVIRONMENT_STATE_KEY, STATE_KEY
from vla_common.manifest import CameraSpec

from vla_collector.lerobot.errors import DatasetError, DatasetWriteError, disk_error
from vla_collector.lerobot.metadata import (
    CODEBASE_VERSION,
    CODEC_NAMES,
    DATA_PATH,
    EPISODES_PATH,
    INDEX_FEATURES,
    INFO_FIELDS,
    VIDEO_PATH,
    DatasetSpec,
    VideoCodecConfig,
    check_codebase_version,
    data_schema,
    episode_schema,
    read_tasks,
    warn_unknown_info_fields,
)
from vla_collector.lerobot.statistics import (
    STAT_NAMES,
    ImageStatsAccumulator,
    aggregate_stats,
    stats_to_json,
    vector_stats,
)
from vla_collector.lerobot.video import VideoEncoder, append_video

STAGING_DIR = ".staging"
JOURNAL = "commit.json"  # the undo log of the commit in progress, in STAGING_DIR
LOCK_FILE = ".lock"  # in the root, never removed: flock'ed by the one writer (see LeRobotV3Writer.close)
MIB = 1024 * 1024  # LeRobot's "MB"
# Appending rewrites the whole file (its new version is written beside it, see the module docstring), so a
# file that grows one small episode at a time up to the size limit costs O(n^2) writes: 96x96 sim episodes
# (~57 KB of video per camera) would fill a 200 MiB mp4 after ~3,400 episodes, having written hundreds of GB.
# A file therefore takes no more episodes once it is larger than this many times the new episode: a commit
# then writes at most about (ratio + 1) times the episode's size, and the total stays linear in the dataset.
# data_files_size_in_mb / video_files_size_in_mb are maxima in LeRobot's format (its reader follows
# meta/episodes whatever the packing), so the smaller files this makes stay valid; 64 keeps them few (a
# 3.6 MB mp4 of 64 such episodes; LeRobot-sized episodes of a few MB reach the size limit first).
APPEND_SIZE_RATIO = 64


# --- file helpers (the atomic write itself: vla_common.atomic) ------------------------------------------


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after this one: file-NNN + 1, or file 0 of the next chunk after chunks_size files."""
    return (chunk + 1, 0) if file >= chunks_size - 1 else (chunk, file + 1)


def joins_file(file_size: int, episode_size: int, limit_mb: float) -> bool:
    """Whether an episode of ``episode_size`` bytes is appended to a file of ``file_size`` bytes (else it
    starts a new file): the file stays under the limit and is not yet ``APPEND_SIZE_RATIO`` times the episode."""
    return file_size + episode_size < limit_mb * MIB and file_size <= APPEND_SIZE_RATIO * episode_size


def _lock(root: Path) -> int:
    """An exclusive lock on ``root/.lock`` (a file descriptor; closing it releases the lock)."""
    path = root / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise disk_error(e, f"creating the lock file {path}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DatasetError(
            f"{root} is open for writing by another writer (it holds the lock on {path}): one writer per "
            "dataset; close the other one (a collector_node, vla-dataset convert, a dagger run) first"
        ) from None
    except OSError as e:
        os.close(fd)
        raise DatasetWriteError(f"cannot lock {path} ({e}): refusing to write without the lock") from e
    return fd


class _Swap:
    """The files one commit writes, swapped in under an undo log (see the module docstring)."""

    def __init__(self, root: Path, episodes_before: int) -> None:
        self.root = root
        self.episodes_before = episodes_before
        self._planned: list[tuple[Path, Path]] = []  # (target, new version)
        self._temps: list[Path] = []
        self._done: list[tuple[Path, Path | None]] = []  # (target, undo link; None: the episode made it)
        self._logged = False  # whether the undo log is ours to remove

    @property
    def journal(self) -> Path:
        return self.root / STAGING_DIR / JOURNAL

    def temp(self, target: Path) -> Path:
        """A new temporary file beside ``target`` (removed unless swapped in)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
        self._temps.append(Path(name))
        return Path(name)

    def discard(self, temp: Path) -> None:
        temp.unlink(missing_ok=True)
        self._temps.remove(temp)

    def plan(self, target: Path, version: Path) -> None:
        """``version`` (a whole file on the same file system) becomes ``target``."""
        self._planned.append((target, version))

    def swap(self) -> None:
        for _, version in self._planned:
            _fsync_file(version)
        entries = [(t, _undo_path(t) if t.exists() else None) for t, _ in self._planned]
        if self.journal.exists():  # the writer refuses episodes after a failed rollback; never overwrite it
            raise DatasetWriteError(
                f"{self.journal} holds the undo log of an unfinished commit: open the dataset again to repair it"
            )
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        self._logged = True
        write_json_atomic(
            self.journal,
            {
                "episodes_before": self.episodes_before,
                "files": [
                    {"target": _rel(self.root, t), "undo": None if u is None else _rel(self.root, u)}
                    for t, u in entries
                ],
            },
        )
        for (target, version), (_, undo) in zip(self._planned, entries, strict=True):
            target.parent.mkdir(parents=True, exist_ok=True)
            if undo is not None:
                undo.unlink(missing_ok=True)
                try:
                    os.link(target, undo)
                except OSError:  # no hard links here: a full copy, renamed into place whole
                    copy = self.temp(target)
                    shutil.copy2(target, copy)
                    _fsync_file(copy)
                    os.replace(copy, undo)
                    self._temps.remove(copy)
            self._done.append((target, undo))
            os.replace(version, target)
            if version in self._temps:
                self._temps.remove(version)
            fsync_dir(target.parent)

    def rollback(self) -> None:
        """Put every target back as it was. If any of them fails, the undo log is kept (opening the root for
        writing puts them back) and a DatasetWriteError names them once every other target has been tried."""
        failed = []
        for target, undo in reversed(self._done):
            try:
                if undo is not None:
                    os.replace(undo, target)
                else:
                    target.unlink(missing_ok=True)
                fsync_dir(target.parent)
            except OSError as e:
                failed.append(f"{_rel(self.root, target)} ({e})")
        self._done = []
        self._cleanup(keep_journal=bool(failed))
        if failed:
            raise DatasetWriteError(
                f"the episode was not added, but putting back {'; '.join(failed)} failed: the undo log "
                f"{self.journal} is kept, and opening the dataset for writing puts them back"
            )

    def abandon(self) -> None:
        """Neither undo nor finish: leave the targets, undo links and log for :func:`finish_interrupted_commit`."""
        self._done = []
        self._cleanup(keep_journal=True)

    def finish(self) -> None:
        """After the commit point: the undo links and the log are no longer needed."""
        for _, undo in self._done:
            if undo is not None:
                with contextlib.suppress(OSError):
                    undo.unlink()
        self._done = []
        self._cleanup()

    def _cleanup(self, keep_journal: bool = False) -> None:
        for temp in self._temps:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        self._temps = []
        if self._logged and not keep_journal:
            with contextlib.suppress(OSError):
                self.journal.unlink(missing_ok=True)


def _undo_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.undo")


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def finish_interrupted_commit(root: Path, committed_episodes: int) -> list[Path]:
    """After a crash during a commit (an undo log in ``.staging``): keep its files if ``meta/episodes`` says
    it committed, else put back what it replaced and remove what it added. Returns the paths it removed."""
    journal = root / STAGING_DIR / JOURNAL
    try:
        log = json.loads(journal.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise DatasetError(f"{journal} is unreadable ({e}): cannot tell whether its commit happened") from e
    committed = committed_episodes > int(log["episodes_before"])
    removed: list[Path] = []
    for entry in log["files"]:
        target = root / entry["target"]
        undo = root / entry["undo"] if entry["undo"] else None
        if committed:
            if undo is not None and undo.exists():
                undo.unlink()
                removed.append(undo)
        elif undo is not None:
            if undo.exists():  # absent: the crash came before this target was touched
                os.replace(undo, target)
                fsync_dir(target.parent)
        elif target.exists():
            target.unlink()
            removed.append(target)
    journal.unlink()
    return removed


def _data_table(spec: DatasetSpec, columns: Mapping[str, np.ndarray]) -> pa.Table:
    """An episode's rows in the data files' schema."""
    schema = data_schema(spec)
    arrays = []
    for f in schema:
        values = columns[f.name]
        if pa.types.is_fixed_size_list(f.type):
            flat = pa.array(values.reshape(-1), pa.float32())
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, f.type.list_size))
        else:
            arrays.append(pa.array(values, f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def _add_note(error: BaseException, note: str) -> None:
    """What else went wrong, on an error that must propagate as it is (a Ctrl-C); Python 3.11+ shows it."""
    if hasattr(error, "add_note"):
        error.add_note(note)


def _video_settings(video: VideoCodecConfig) -> str:
    return f"{video.codec} preset {video.preset!r} (crf {video.crf}, g {video.g}, {video.pix_fmt})"


def _video_parameters(theirs: VideoCodecConfig, ours: VideoCodecConfig) -> str:
    """collector_node's parameters that record like ``theirs`` (codec and preset always: a preset is a codec's)."""
    given = [f"video_codec:={theirs.codec}", f"video_preset:={theirs.preset}"]
    given += [
        f"video_{name}:={getattr(theirs, name)}"
        for name in ("crf", "g")
        if getattr(theirs, name) != getattr(ours, name)
    ]
    return " ".join(given)


def _tasks_bytes(tasks: Sequence[str]) -> bytes:
    frame = pd.DataFrame(
        {"task_index": np.arange(len(tasks), dtype=np.int64)}, index=pd.Index(list(tasks), name="task")
    )
    # pandas 3 would store the index as large_string; LeRobot writes string.
    schema = pa.schema([pa.field("task_index", pa.int64()), pa.field("task", pa.string())])
    return _table_bytes(pa.Table.from_pandas(frame, schema=schema, preserve_index=True))


@dataclass(frozen=True)
class _Paths:
    """A file template's path for (chunk, file), and the meta/episodes columns that name them."""

    root: Path
    template: str
    chunk_column: str
    file_column: str
    video_key: str = ""

    def __call__(self, chunk: int, file: int) -> Path:
        extra = {"video_key": self.video_key} if self.video_key else {}
        return self.root / self.template.format(chunk_index=chunk, file_index=file, **extra)

    def indices(self, row: Mapping[str, Any]) -> tuple[int, int]:
        return int(row[self.chunk_column]), int(row[self.file_column])


# --- the writer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeSummary:
    episode_index: int
    length: int
    tasks: tuple[str, ...]
    bytes_written: int


class EpisodeRecorder:
    """Frames of one episode on their way into the dataset; finish() commits, abort() forgets."""

    def __init__(self, writer: LeRobotV3Writer, staging: Path) -> None:
        self._writer = writer
        self._spec = writer.spec
        self._staging = staging
        self._states: list[np.ndarray] = []
        self._environment_states: list[np.ndarray] = []
        self._actions: list[np.ndarray] = []
        self._tasks: list[str] = []
        self._image_stats = {c.name: ImageStatsAccumulator() for c in self._spec.cameras}
        self._encoders: dict[str, VideoEncoder] = {}
        self._closed = False
        try:
            for cam in self._spec.cameras:
                self._encoders[cam.name] = VideoEncoder(
                    staging / f"{cam.name}.mp4", cam, self._spec.fps, self._spec.video
                )
        except OSError as e:
            self.abort()
            raise disk_error(e, "starting the episode's video files") from e

    def __len__(self) -> int:
        return len(self._states)

    def add_frame(
        self,
        state: Sequence[float],
        action: Sequence[float],
        images: Mapping[str, np.ndarray],
        task: str,
        environment_state: Sequence[float] | None = None,
    ) -> None:
        """One frame; ``environment_state`` is required exactly when the dataset has that feature."""
        if self._closed:
            raise DatasetError("episode already finished or aborted")
        s = np.asarray(state, dtype=np.float32).reshape(-1)
        a = np.asarray(action, dtype=np.float32).reshape(-1)
        if s.shape != (len(self._spec.state_names),) or a.shape != (len(self._spec.action_names),):
            raise DatasetError(
                f"state/action sizes {s.shape[0]}/{a.shape[0]} != {len(self._spec.state_names)}/{len(self._spec.action_names)}"
            )
        if not (np.isfinite(s).all() and np.isfinite(a).all()):
            raise DatasetError("state or action contains NaN/inf")
        env_names = self._spec.environment_state_names
        if (environment_state is None) != (not env_names):
            raise DatasetError(
                f"the dataset has {ENVIRONMENT_STATE_KEY}: every frame needs it"
                if env_names
                else f"the dataset has no {ENVIRONMENT_STATE_KEY} feature (DatasetSpec.environment_state_names)"
            )
        e = None
        if environment_state is not None:
            e = np.asarray(environment_state, dtype=np.float32).reshape(-1)
            if e.shape != (len(env_names),):
                raise DatasetError(
                    f"{ENVIRONMENT_STATE_KEY} has {e.shape[0]} values, names {list(env_names)}"
                )
            if not np.isfinite(e).all():
                raise DatasetError(f"{ENVIRONMENT_STATE_KEY} contains NaN/inf")
        if set(images) != set(self._encoders):
            raise DatasetError(
                f"images for {sorted(images)} but the dataset has cameras {sorted(self._encoders)}"
            )
        if not task:
            raise DatasetError("every frame needs a task (language instruction)")
        for cam in self._spec.cameras:
            rgb = images[cam.name]
            if rgb.shape != (cam.height, cam.width, 3) or rgb.dtype != np.uint8:
                raise DatasetError(
                    f"camera {cam.name!r}: got {rgb.dtype} {rgb.shape}, expected uint8 {(cam.height, cam.width, 3)}"
                )
        for cam in self._spec.cameras:
            rgb = np.ascontiguousarray(images[cam.name])
            self._image_stats[cam.name].add(rgb)
            self._encoders[cam.name].put(rgb)
        self._states.append(s)
        if e is not None:
            self._environment_states.append(e)
        self._actions.append(a)
        self._tasks.append(task)

    def _close(self) -> None:
        self._closed = True
        if self._writer._active is self:  # no reference cycle: dropping the writer releases its lock at once
            self._writer._active = None

    def abort(self) -> None:
        self._close()
        for enc in self._encoders.values():
            with contextlib.suppress(DatasetWriteError):  # aborting: the files are discarded anyway
                enc.close()
        shutil.rmtree(self._staging, ignore_errors=True)

    def finish(self) -> EpisodeSummary:
        if self._closed:
            raise DatasetError("episode already finished or aborted")
        self._close()
        if not self._states:
            self.abort()
            raise DatasetError("an episode needs at least one frame")
        try:
            for enc in self._encoders.values():
                enc.close()
            return self._writer._commit(self)
        except OSError as e:
            shutil.rmtree(self._staging, ignore_errors=True)
            raise disk_error(e, "writing the episode") from e
        except BaseException:
            shutil.rmtree(self._staging, ignore_errors=True)
            raise


class LeRobotV3Writer:
    """Create a dataset or append episodes to one. One writer per root: it holds ``<root>/.lock`` (an
    exclusive flock) until :meth:`close` (or ``with``, or until it is garbage-collected)."""

    def __init__(self, root: Path, spec: DatasetSpec) -> None:
        self.root = root
        self.spec = spec
        self._episodes: list[dict[str, Any]] = []
        self._tasks: list[str] = []
        self._active: EpisodeRecorder | None = None
        # info.json fields this package does not know (a newer LeRobot's), kept as they are
        self._extra_info: dict[str, Any] = {}
        self._lock_fd: int | None = None
        # Why no more episodes are taken (a commit could neither be undone nor confirmed); None: all is well.
        self._broken: str | None = None

    @classmethod
    def create(cls, root: str | os.PathLike[str], spec: DatasetSpec) -> LeRobotV3Writer:
        """A new, empty dataset (refuses to overwrite an existing one)."""
        path = Path(root)
        if (path / "meta" / "info.json").exists():
            raise DatasetError(f"{path} already holds a dataset: open it to append")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise disk_error(e, "creating the dataset") from e
        writer = cls(path, spec)
        writer._lock_fd = _lock(path)
        try:
            if (path / "meta" / "info.json").exists():  # created by another writer before we locked
                raise DatasetError(f"{path} already holds a dataset: open it to append")
            (path / "meta").mkdir(parents=True, exist_ok=True)
            writer._write_derived()
        except OSError as e:
            writer.close()
            raise disk_error(e, "creating the dataset") from e
        except BaseException:
            writer.close()
            raise
        return writer

    @classmethod
    def open(cls, root: str | os.PathLike[str]) -> LeRobotV3Writer:
        """An existing dataset, repaired after a crash if needed, ready to take more episodes."""
        path = Path(root)
        if not (path / "meta" / "info.json").is_file():
            raise DatasetError(f"{path} holds no dataset (no meta/info.json)")
        fd = _lock(path)  # before the repair: another writer's commit in progress is not ours to undo
        try:
            writer = cls._open_locked(path)
        except BaseException:
            os.close(fd)
            raise
        writer._lock_fd = fd
        return writer

    @classmethod
    def _open_locked(cls, path: Path) -> LeRobotV3Writer:
        info_path = path / "meta" / "info.json"
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{info_path} is not valid JSON: {e}") from None
        version = check_codebase_version(info, path)
        if version != CODEBASE_VERSION:
            raise DatasetError(
                f"{path}: codebase_version {version!r}: this writer appends to {CODEBASE_VERSION} datasets only"
            )
        for key, feat in info.get("features", {}).items():
            codec = (feat.get("info") or {}).get("video.codec") if isinstance(feat, Mapping) else None
            if (
                isinstance(feat, Mapping)
                and feat.get("dtype") == "video"
                and codec not in CODEC_NAMES.values()
            ):
                raise DatasetError(
                    f"{path}: cannot append to {key}: video codec {codec!r} is not one we encode"
                )
        spec = DatasetSpec.from_info(info)
        unwritable = sorted(set(info.get("features", {})) - set(spec.features()))
        if unwritable:
            raise DatasetError(f"{path}: cannot append: this writer does not write the features {unwritable}")
        writer = cls(path, spec)
        unknown = warn_unknown_info_fields(info, info_path, "kept as they are while appending")
        writer._extra_info = {k: info[k] for k in unknown if k in info}
        if (path / EPISODES_PATH).is_file():
            writer._episodes = pq.read_table(path / EPISODES_PATH).to_pylist()
        writer.repair()  # also reads the tasks
        return writer

    @classmethod
    def open_or_create(cls, root: str | os.PathLike[str], spec: DatasetSpec) -> LeRobotV3Writer:
        path = Path(root)
        if not (path / "meta" / "info.json").is_file():
            return cls.create(path, spec)
        writer = cls.open(path)
        if writer.spec.features() != spec.features() or writer.spec.robot_type != spec.robot_type:
            writer.close()
            theirs, ours = writer.spec, spec
            if replace(ours, video=theirs.video).features() == theirs.features() and (
                theirs.robot_type == ours.robot_type
            ):
                raise DatasetError(
                    f"{path} holds a dataset encoded with {_video_settings(theirs.video)}, this one would be "
                    f"{_video_settings(ours.video)}: refusing to mix episodes (to append, record with "
                    f"{_video_parameters(theirs.video, ours.video)}, or into a new root)"
                )
            raise DatasetError(
                f"{path} holds a dataset with other features or robot ({theirs.robot_type}, "
                f"{sorted(theirs.features())}): refusing to mix episodes"
            )
        return writer

    def close(self) -> None:
        """Release the root's lock (another writer may then open it); the writer takes no more episodes."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> LeRobotV3Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # like a file: dropping the writer releases the lock
        with contextlib.suppress(Exception):
            self.close()

    @property
    def num_episodes(self) -> int:
        return len(self._episodes)

    @property
    def num_frames(self) -> int:
        return sum(int(e["length"]) for e in self._episodes)

    def repair(self) -> list[Path]:
        """Remove what a crash left behind (staging, unreferenced files) and rewrite derived metadata."""
        removed = finish_interrupted_commit(self.root, len(self._episodes))
        if (self.root / "meta" / "tasks.parquet").is_file():  # as the log left it (undone: without new tasks)
            self._tasks = read_tasks(self.root)
        staging = self.root / STAGING_DIR
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
            removed.append(staging)
        referenced = {self.root / self._data_rel(e) for e in self._episodes}
        for e in self._episodes:
            referenced |= {self.root / self._video_rel(e, cam) for cam in self.spec.cameras}
        # Files no episode names: what a crash left of a commit (temporary versions, a file it started).
        for folder, pattern in (("data", "*.parquet"), ("videos", "*.mp4")):
            for f in (self.root / folder).rglob("*") if (self.root / folder).exists() else []:
                if f.is_file() and (not f.match(pattern) or f not in referenced):
                    f.unlink()
                    removed.append(f)
        for f in (self.root / "meta").rglob(".*.tmp"):
            f.unlink()
            removed.append(f)
        self._write_derived()
        return removed

    def _data_rel(self, row: Mapping[str, Any]) -> str:
        return DATA_PATH.format(
            chunk_index=int(row["data/chunk_index"]), file_index=int(row["data/file_index"])
        )

    def _video_rel(self, row: Mapping[str, Any], cam: CameraSpec) -> str:
        key = cam.feature_key
        return VIDEO_PATH.format(
            video_key=key,
            chunk_index=int(row[f"videos/{key}/chunk_index"]),
            file_index=int(row[f"videos/{key}/file_index"]),
        )

    def _check_writable(self) -> None:
        if self._lock_fd is None:
            raise DatasetError(f"the writer of {self.root} is closed")
        if self._broken is not None:
            raise DatasetError(f"{self.root}: {self._broken}; open the dataset again to repair it")

    def begin_episode(self) -> EpisodeRecorder:
        self._check_writable()
        if self._active is not None:
            raise DatasetError("an episode is already being recorded: finish or abort it first")
        staging = self.root / STAGING_DIR / f"episode-{len(self._episodes):06d}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir(parents=True)
        except OSError as e:
            raise disk_error(e, "starting an episode") from e
        self._active = EpisodeRecorder(self, staging)
        return self._active

    def write_episode(
        self,
        states: np.ndarray,
        actions: np.ndarray,
        images: Mapping[str, Iterable[np.ndarray]],
        task: str | Sequence[str],
        environment_states: np.ndarray | None = None,
    ) -> EpisodeSummary:
        """Write a whole episode from arrays (``task``: one text, or one per frame; ``environment_states``:
        (T, n), required exactly when the dataset has ``observation.environment_state``)."""
        tasks = [task] * len(states) if isinstance(task, str) else list(task)
        if len(tasks) != len(states) or len(actions) != len(states):
            raise DatasetError(f"{len(states)} states, {len(actions)} actions and {len(tasks)} tasks differ")
        if environment_states is not None and len(environment_states) != len(states):
            raise DatasetError(f"{len(states)} states but {len(environment_states)} environment states")
        rec = self.begin_episode()
        try:
            iters = {name: iter(frames) for name, frames in images.items()}
            for i in range(len(states)):
                rec.add_frame(
                    states[i],
                    actions[i],
                    {name: next(it) for name, it in iters.items()},
                    tasks[i],
                    None if environment_states is None else environment_states[i],
                )
        except BaseException:
            rec.abort()
            raise
        return rec.finish()

    # --- commit ---

    def _commit(self, rec: EpisodeRecorder) -> EpisodeSummary:
        self._check_writable()  # closed (or broken) while the episode was recorded
        ep_index = len(self._episodes)
        new_tasks = [t for t in dict.fromkeys(rec._tasks) if t not in self._tasks]
        tasks = self._tasks + new_tasks
        columns = self._episode_columns(rec, ep_index, {t: i for i, t in enumerate(tasks)})
        swap = _Swap(self.root, ep_index)
        episodes: list[dict[str, Any]] | None = None
        late: BaseException | None = None  # an error after the commit point: raised once the commit is done
        try:
            # 1. The new versions of the files the episode goes into, whole, under temporary names.
            row, written = self._place_episode(rec, columns, swap)
            if new_tasks:
                target = self.root / "meta" / "tasks.parquet"
                temp = swap.temp(target)
                temp.write_bytes(_tasks_bytes(tasks))
                swap.plan(target, temp)
            # 2. Swap them in under the undo log.
            swap.swap()
            # 3. The episode table: the commit point, once it is renamed into place.
            episodes = [*self._episodes, row]
            write_bytes_atomic(
                self.root / EPISODES_PATH,
                _table_bytes(pa.Table.from_pylist(episodes, schema=episode_schema(self.spec))),
            )
        except BaseException as e:
            if not self._committed_anyway(swap, e, reached_commit_point=episodes is not None):
                raise
            late = e
        assert episodes is not None  # committed
        swap.finish()
        self._episodes = episodes
        self._tasks = tasks
        shutil.rmtree(rec._staging, ignore_errors=True)
        with contextlib.suppress(OSError):  # only when empty: another recorder may be staging
            rec._staging.parent.rmdir()
        if late is not None and not isinstance(late, Exception):
            raise late  # a Ctrl-C: the episode is in; opening the dataset for writing rewrites the rest
        # 4. Derived metadata (recomputed by repair() if a crash interrupts it).
        try:
            self._write_derived()
        except OSError as e:
            if late is None:
                raise DatasetWriteError(
                    f"episode {ep_index} was added, but rewriting info.json/stats.json failed ({e}); "
                    "opening the dataset for writing redoes it"
                ) from e
        if late is not None:
            raise DatasetWriteError(
                f"episode {ep_index} was added, but an error followed its commit point ({late}); "
                "opening the dataset for writing redoes what is left"
            ) from late
        return EpisodeSummary(ep_index, len(rec), tuple(row["tasks"]), written)

    def _committed_anyway(self, swap: _Swap, error: BaseException, reached_commit_point: bool) -> bool:
        """After ``error`` in a commit: True if ``meta/episodes`` already lists the episode (the commit
        happened; rolling back now would leave it listed without its rows and frames). Else the commit is
        undone (False: the caller re-raises ``error``, which names a rollback that failed), or, if
        ``meta/episodes`` cannot be read, neither: the undo log stays for :meth:`open` to settle, the writer
        takes no more episodes, and a DatasetWriteError says so (a Ctrl-C is re-raised with a note)."""
        path = self.root / EPISODES_PATH
        listed: int | None = swap.episodes_before
        if reached_commit_point and path.is_file():
            try:
                listed = pq.read_metadata(path).num_rows
            except (OSError, ValueError, pa.ArrowException) as e:
                listed, unreadable = None, e
        if listed is None:
            swap.abandon()
            self._broken = (
                f"after {error!r} while committing episode {swap.episodes_before}, {path} is unreadable "
                f"({unreadable}): whether the episode is in is left to the undo log {swap.journal}"
            )
            if not isinstance(error, Exception):
                _add_note(error, self._broken)
                return False
            raise DatasetWriteError(f"{self._broken}; opening the dataset for writing settles it") from error
        if listed > swap.episodes_before:
            return True
        try:
            swap.rollback()
        except DatasetWriteError as failed:
            self._broken = str(failed)
            if not isinstance(error, Exception):
                _add_note(error, str(failed))
                return False
            raise failed from error
        return False

    def _episode_columns(
        self, rec: EpisodeRecorder, ep_index: int, task_ids: Mapping[str, int]
    ) -> dict[str, np.ndarray]:
        """The episode's data columns, by feature name."""
        length = len(rec)
        start = self.num_frames
        columns = {
            STATE_KEY: np.stack(rec._states),
            ACTION_KEY: np.stack(rec._actions),
            "timestamp": np.arange(length, dtype=np.float32) / np.float32(self.spec.fps),
            "frame_index": np.arange(length, dtype=np.int64),
            "episode_index": np.full(length, ep_index, dtype=np.int64),
            "index": np.arange(start, start + length, dtype=np.int64),
            "task_index": np.array([task_ids[t] for t in rec._tasks], dtype=np.int64),
        }
        if self.spec.environment_state_names:
            columns[ENVIRONMENT_STATE_KEY] = np.stack(rec._environment_states)
        return columns

    def _place_episode(
        self, rec: EpisodeRecorder, columns: Mapping[str, np.ndarray], swap: _Swap
    ) -> tuple[dict[str, Any], int]:
        """Plan the new versions of the episode's data file and mp4s in ``swap``; return its meta/episodes
        row and the bytes it adds (its rows and its videos)."""
        spec = self.spec
        length = len(rec)
        start = int(columns["index"][0])
        table = _data_table(spec, columns)
        payload = _table_bytes(table)
        written = len(payload)
        chunk, file = self._place_data(table, payload, swap)
        row: dict[str, Any] = {
            "episode_index": int(columns["episode_index"][0]),
            "tasks": list(dict.fromkeys(rec._tasks)),
            "length": length,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": start,
            "dataset_to_index": start + length,
        }
        for cam in spec.cameras:
            key = cam.feature_key
            staged = rec._staging / f"{cam.name}.mp4"
            written += staged.stat().st_size
            chunk, file, before = self._place_video(cam, staged, swap)
            row[f"videos/{key}/chunk_index"] = chunk
            row[f"videos/{key}/file_index"] = file
            # From frame counts, so that one episode's to_timestamp is the next one's from_timestamp.
            row[f"videos/{key}/from_timestamp"] = before / spec.fps
            row[f"videos/{key}/to_timestamp"] = (before + length) / spec.fps
        stats = {cam.feature_key: rec._image_stats[cam.name].stats() for cam in spec.cameras}
        stats |= {key: vector_stats(columns[key]) for key in (*spec.vector_keys(), *INDEX_FEATURES)}
        for key, feat in stats.items():
            for stat in STAT_NAMES:
                row[f"stats/{key}/{stat}"] = np.asarray(feat[stat]).tolist()
        row["meta/episodes/chunk_index"] = 0
        row["meta/episodes/file_index"] = 0
        return row, written

    def _file_after_last(self, path_of: _Paths, last: tuple[int, int]) -> tuple[int, int]:
        """The next (chunk, file) after ``last`` that no committed episode names."""
        named = {path_of.indices(e) for e in self._episodes}
        chunk, file = next_file(*last, self.spec.chunks_size)
        while (chunk, file) in named:
            chunk, file = next_file(chunk, file, self.spec.chunks_size)
        return chunk, file

    def _place_data(self, table: pa.Table, payload: bytes, swap: _Swap) -> tuple[int, int]:
        """Where the episode's rows go: appended to the last episode's data file while it stays under
        ``data_files_size_in_mb`` (and :func:`joins_file`), else a new file. Plans the file's new version in
        ``swap``."""
        path_of = _Paths(self.root, DATA_PATH, "data/chunk_index", "data/file_index")
        if not self._episodes:
            chunk, file = 0, 0
        else:
            last = path_of.indices(self._episodes[-1])
            current = path_of(*last)
            limit = self.spec.data_files_size_in_mb
            if current.is_file() and joins_file(current.stat().st_size, len(payload), limit):
                old = pq.read_table(current)
                rows = sum(int(e["length"]) for e in self._episodes if path_of.indices(e) == last)
                # Only a file that holds exactly the committed rows, in our schema, is extended.
                if old.num_rows == rows and old.schema.equals(table.schema, check_metadata=False):
                    merged = pa.concat_tables([old.replace_schema_metadata(table.schema.metadata), table])
                    temp = swap.temp(current)
                    temp.write_bytes(_table_bytes(merged))
                    swap.plan(current, temp)
                    return last
            chunk, file = self._file_after_last(path_of, last)
        target = path_of(chunk, file)
        temp = swap.temp(target)
        temp.write_bytes(payload)
        swap.plan(target, temp)
        return chunk, file

    def _place_video(self, cam: CameraSpec, staged: Path, swap: _Swap) -> tuple[int, int, int]:
        """Where one camera's episode video goes, and how many frames precede it there: appended to the last
        episode's file of that camera while it stays under ``video_files_size_in_mb`` (and :func:`joins_file`)
        and the streams can be joined exactly (:func:`append_video`), else a new file."""
        key = cam.feature_key
        path_of = _Paths(self.root, VIDEO_PATH, f"videos/{key}/chunk_index", f"videos/{key}/file_index", key)
        if not self._episodes:
            chunk, file = 0, 0
        else:
            last_row = self._episodes[-1]
            last = path_of.indices(last_row)
            current = path_of(*last)
            before = round(float(last_row[f"videos/{key}/to_timestamp"]) * self.spec.fps)
            limit = self.spec.video_files_size_in_mb
            if current.is_file() and joins_file(current.stat().st_size, staged.stat().st_size, limit):
                temp = swap.temp(current)
                if append_video(current, before, staged, temp, self.spec.fps):
                    swap.plan(current, temp)
                    return (*last, before)
                swap.discard(temp)
            chunk, file = self._file_after_last(path_of, last)
        swap.plan(path_of(chunk, file), staged)
        return chunk, file, 0

    def _write_derived(self) -> None:
        spec = self.spec
        tasks_path = self.root / "meta" / "tasks.parquet"
        if not tasks_path.is_file():  # a new dataset; a commit swaps in the version with its new tasks
            write_bytes_atomic(tasks_path, _tasks_bytes(self._tasks))
        n = len(self._episodes)
        info = {
            "codebase_version": CODEBASE_VERSION,
            "fps": spec.fps,
            "features": spec.features(),
            "total_episodes": n,
            "total_frames": self.num_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": spec.chunks_size,
            "data_files_size_in_mb": spec.data_files_size_in_mb,
            "video_files_size_in_mb": spec.video_files_size_in_mb,
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if spec.cameras else None,
            "robot_type": spec.robot_type,
            "splits": {"train": f"0:{n}"},
            **{k: v for k, v in self._extra_info.items() if k not in INFO_FIELDS},
        }
        per_episode = []
        for row in self._episodes:
            ep: dict[str, dict[str, np.ndarray]] = {}
            for col, value in row.items():
                if col.startswith("stats/"):
                    feature, stat = col[len("stats/") :].rsplit("/", 1)
                    ep.setdefault(feature, {})[stat] = np.asarray(value, dtype=np.float64)
            per_episode.append(ep)
        stats = aggregate_stats(per_episode)
        write_json_atomic(self.root / "meta" / "stats.json", stats_to_json(stats), indent=4)
        normalization = {
            k: {s: stats[k][s].tolist() for s in ("mean", "std", "min", "max")}
            for k in (STATE_KEY, ACTION_KEY)
            if k in stats
        }
        spec.manifest(normalization).save(self.root / "meta" / "embodiment.json")
        write_json_atomic(self.root / "meta" / "info.json", info, indent=4)
