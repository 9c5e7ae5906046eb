"""Test support: where the tests find the shared fixtures.

The fixtures (a LeRobotDataset v3.0 written by LeRobot itself, a rosbag2 MCAP bag written by ``rosbags``)
live in ``../shared/fixtures`` beside the repository, not inside it. Tests name them relative to their own
file, so a clone anywhere finds them (or skips with a reason where they are absent).
"""

from __future__ import annotations

import os
from pathlib import Path


def shared_fixtures(test_file: str | os.PathLike[str]) -> Path:
    """``../shared/fixtures`` from the repository root, for a test at ``src/<package>/test/<file>.py``.

    Pass the test's ``__file__``: the repository is found from the test, not from this module, which may be
    installed elsewhere (a colcon build without ``--symlink-install``).
    """
    repository = Path(test_file).resolve().parents[3]
    return repository.parent / "shared" / "fixtures"
