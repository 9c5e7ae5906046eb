"""Run by the LeRobot venv's Python (test support, not a test): open one of our recorded datasets with
LeRobot 0.6.1's ``LeRobotDataset``, ``delete_episodes`` one episode into a new dataset, ``recompute_stats`` on
it, and check what LeRobot sees. Prints one JSON line of findings; exits non-zero on a failed check.

    python lerobot_edit_dataset.py SRC DST --delete 1
"""

import argparse
import json
import os
import sys

import numpy as np
import pandas as pd
from lerobot.datasets.dataset_tools import delete_episodes, recompute_stats
from lerobot.datasets.lerobot_dataset import LeRobotDataset


def frame_at(dataset: LeRobotDataset, index: int, key: str) -> np.ndarray:
    """A decoded frame as HxWx3 uint8 (LeRobot hands out 3xHxW float in [0, 1])."""
    image = dataset[index][key].numpy()
    return np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--delete", type=int, required=True)
    args = parser.parse_args()

    src = LeRobotDataset("local/recorded", root=args.src, video_backend="pyav")
    keys = src.meta.video_keys
    lengths = [int(src.meta.episodes[i]["length"]) for i in range(src.meta.total_episodes)]
    starts = np.cumsum([0, *lengths])
    # every episode's first and last frames decode from the packed mp4
    first_last = {
        (e, end, k): frame_at(src, int(starts[e] if end == "first" else starts[e + 1] - 1), k)
        for e in range(len(lengths))
        for end in ("first", "last")
        for k in keys
    }

    dst = delete_episodes(src, [args.delete], output_dir=args.dst, repo_id="local/edited")
    kept = [e for e in range(len(lengths)) if e != args.delete]
    dst = recompute_stats(dst)

    # reopen from disk, as lerobot-train would
    edited = LeRobotDataset("local/edited", root=args.dst, video_backend="pyav")
    new_lengths = [int(edited.meta.episodes[i]["length"]) for i in range(edited.meta.total_episodes)]
    new_starts = np.cumsum([0, *new_lengths])
    errors = []  # mean absolute difference of decoded frames, old vs new (re-encoded when the file was shared)
    for new, old in enumerate(kept):
        for end in ("first", "last"):
            index = int(new_starts[new] if end == "first" else new_starts[new + 1] - 1)
            item = edited[index]
            if int(item["episode_index"]) != new:
                found = int(item["episode_index"])
                print(f"frame {index}: episode_index {found}, expected {new}", file=sys.stderr)
                return 1
            for k in keys:
                image = frame_at(edited, index, k).astype(float)
                errors.append(float(np.abs(image - first_last[(old, end, k)].astype(float)).mean()))

    data = pd.concat(pd.read_parquet(p) for p in sorted((edited.root / "data").glob("*/*.parquet")))
    actions = np.stack(data["action"].to_numpy())
    stats = edited.meta.stats
    print(
        json.dumps(
            {
                "src_episodes": src.meta.total_episodes,
                "src_frames": src.meta.total_frames,
                "src_lengths": lengths,
                "dst_episodes": edited.meta.total_episodes,
                "dst_frames": edited.meta.total_frames,
                "dst_len": len(edited),
                "dst_lengths": new_lengths,
                "kept": kept,
                "episode_indices": sorted(int(i) for i in data["episode_index"].unique()),
                "frame_errors": errors,
                "action_mean": np.asarray(stats["action"]["mean"]).tolist(),
                "action_mean_data": actions.mean(axis=0).tolist(),
                "action_count": np.asarray(stats["action"]["count"]).tolist(),
                "video_preset": edited.meta.features[keys[0]]["info"].get("video.preset"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip the interpreter's teardown: after delete_episodes' AV1 re-encode it sometimes aborts there
    # ("terminate called without an active exception", SIGABRT; 2 runs in 9 here), after all the work is done.
    os._exit(code)
