"""LeRobotDataset v3.0: a writer and a reader (of v3.x), with pyarrow and PyAV (no LeRobot, no torch).

The layout is exactly the one LeRobot 0.6.1 writes (checked against ``shared/fixtures/lerobot_v3_reference``)::

    meta/info.json                      codebase_version "v3.0", fps, features, totals, paths, robot_type, splits
    meta/stats.json                     per feature min/max/mean/std/count/q01/q10/q50/q90/q99
    meta/tasks.parquet                  task_index, task (pandas index on task)
    meta/episodes/chunk-000/file-000.parquet   one row per episode (lengths, tasks, file indices, stats/...)
    meta/embodiment.json                the embodiment manifest (ours; LeRobot ignores it)
    data/chunk-XXX/file-YYY.parquet     observation.state, action (fixed_size_list<float>), timestamp, ...
    videos/<video_key>/chunk-XXX/file-YYY.mp4

Episodes are packed as LeRobot packs them: an episode joins the data file (and, per camera, the mp4) of the
episode before it until that file would reach ``DatasetSpec.data_files_size_in_mb`` (100 MiB) or
``video_files_size_in_mb`` (200 MiB) or holds ``APPEND_SIZE_RATIO`` (64) times the new episode (appending
rewrites the file; this keeps the writes linear), then the next file starts (``chunks_size``, 1000, files a chunk).
``meta/episodes`` names every episode's files and its [from_timestamp, to_timestamp) in each mp4. The reader
reads any packing, one episode per file included (what this writer wrote before it packed).

Reading (what training uses)::

    ds = LeRobotV3Dataset("/data/pick")            # any v3.0 root, ours or LeRobot's
    ds.fps, ds.features, ds.info, ds.tasks         # int, dict, dict (info.json), list[str] by task_index
    ds.camera_names                                # ("front", "wrist"): keys observation.images.<name>
    ds.num_episodes, ds.num_frames
    ds.episodes                                    # tuple[EpisodeInfo]: index, length, tasks, from/to index
    ep = ds.episode(0)                             # EpisodeArrays: state (T,8) f32, action (T,8) f32,
                                                   #   timestamp (T,), frame_index, task_index (T,), tasks,
                                                   #   environment_state (T,6) f32 or None
    ds.has_environment_state                       # observation.environment_state recorded (sim only)
    ds.frames(0, "front")                          # uint8 (T,H,W,3) rgb, decoded from the episode's mp4
    ds.stats                                       # meta/stats.json as numpy arrays
    ds.manifest                                    # EmbodimentManifest (meta/embodiment.json or derived)

Writing::

    spec = DatasetSpec(fps=10, robot_type="panda", state_names=JOINTS, action_names=JOINTS,
                       cameras=(CameraSpec("front", 480, 640),))
    writer = LeRobotV3Writer.create(root, spec)    # or LeRobotV3Writer.open(root) to append; holds <root>/.lock
                                                   #   (one writer per root) until writer.close() or `with`
    rec = writer.begin_episode()
    rec.add_frame(state, action, {"front": rgb}, task="pick up the red block")   # video encodes as it goes
    summary = rec.finish()                          # or rec.abort()
    writer.write_episode(states, actions, {"front": frames}, task)   # the same in one call

Privileged environment state (optional): ``DatasetSpec(..., environment_state_names=("target.x", ...))`` adds
the float32 vector feature ``observation.environment_state`` (LeRobot's name for it; a simulator's ground
truth, e.g. object positions, for auxiliary losses and probes, never a policy input on a real robot), stored
like ``observation.state`` (a fixed-size list column, names in info.json, stats). Every frame then needs it:
``add_frame(..., environment_state=v)``, ``write_episode(..., environment_states=V)``. Without names the
feature is absent, and a dataset without it reads with ``environment_state`` None.

Crash safety: an episode is staged under ``.staging/`` and becomes part of the dataset only when
``meta/episodes`` (the commit point) is atomically replaced; ``info.json``, ``stats.json`` and the manifest
are derived from it and rewritten atomically (temp + fsync + rename). A file that committed episodes live in
is never written into: appending writes its new version whole beside it and renames it over the old one,
under an undo log (``.staging/commit.json`` and hard links to the old versions) that puts the old versions
back if the commit does not happen (details: :mod:`vla_collector.lerobot.writer`). Opening a root for
writing repairs whatever a crash left behind (an interrupted commit, staging files, data or video files no
episode names, stale totals): a SIGKILL loses no completed episode. A full disk raises
:class:`DatasetWriteError` and leaves the dataset byte for byte as it was.

Video presets: ``VideoCodecConfig.preset`` is an int for SVT-AV1 (12) and a name for x264 ("veryfast"), and
info.json records the one used, so LeRobot can re-encode with it; a null preset (LeRobot's own h264 datasets)
reads as the encoder's default.

Bad input: an info.json with fields this package does not know (a newer LeRobot) opens with a
:class:`DatasetWarning` naming them (the writer keeps them when it appends); a codebase_version other than
v3.x is refused with a :class:`DatasetError` naming it.

Modules, split along LeRobot's ``datasets/`` (import the names from this package, the one public path):

    errors        DatasetError, DatasetWriteError, DatasetWarning
    metadata      the layout (paths, CODEBASE_VERSION), DatasetSpec, VideoCodecConfig, the parquet schemas,
                  read_tasks
    statistics    vector_stats, ImageStatsAccumulator, aggregate_stats (STAT_NAMES, QUANTILES)
    reader        LeRobotV3Dataset, EpisodeInfo, EpisodeArrays
    video         the mp4 encoder of one camera stream (a worker thread per camera); append_video (remux)
    writer        LeRobotV3Writer, EpisodeRecorder, EpisodeSummary: staging, packing, commit, repair

Pure Python: no rclpy.
"""

from vla_collector.lerobot.errors import DatasetError, DatasetWarning, DatasetWriteError
from vla_collector.lerobot.metadata import (
    CODEBASE_VERSION,
    CODEC_NAMES,
    DATA_PATH,
    DEFAULT_CHUNKS_SIZE,
    DEFAULT_DATA_FILES_SIZE_IN_MB,
    DEFAULT_VIDEO_FILES_SIZE_IN_MB,
    EPISODES_PATH,
    VIDEO_PATH,
    X264_PRESETS,
    DatasetSpec,
    VideoCodecConfig,
    read_tasks,
)
from vla_collector.lerobot.reader import EpisodeArrays, EpisodeInfo, LeRobotV3Dataset
from vla_collector.lerobot.statistics import (
    QUANTILES,
    STAT_NAMES,
    ImageStatsAccumulator,
    aggregate_stats,
    vector_stats,
)
from vla_collector.lerobot.writer import EpisodeRecorder, EpisodeSummary, LeRobotV3Writer

__all__ = [
    "CODEBASE_VERSION",
    "CODEC_NAMES",
    "DATA_PATH",
    "DEFAULT_CHUNKS_SIZE",
    "DEFAULT_DATA_FILES_SIZE_IN_MB",
    "DEFAULT_VIDEO_FILES_SIZE_IN_MB",
    "EPISODES_PATH",
    "QUANTILES",
    "STAT_NAMES",
    "VIDEO_PATH",
    "X264_PRESETS",
    "DatasetError",
    "DatasetSpec",
    "DatasetWarning",
    "DatasetWriteError",
    "EpisodeArrays",
    "EpisodeInfo",
    "EpisodeRecorder",
    "EpisodeSummary",
    "ImageStatsAccumulator",
    "LeRobotV3Dataset",
    "LeRobotV3Writer",
    "VideoCodecConfig",
    "aggregate_stats",
    "read_tasks",
    "vector_stats",
]
