"""The dataset's two errors, and how an OSError while writing becomes one."""

from __future__ import annotations

import errno


class DatasetError(ValueError):
    """A dataset root is missing, malformed or not LeRobot v3.0."""


class DatasetWriteError(RuntimeError):
    """Writing failed (e.g. the disk is full); the committed part of the dataset is unchanged."""


def disk_error(e: OSError, what: str) -> DatasetWriteError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DatasetWriteError(
            f"disk full while {what}: the episode was not added, the dataset is unchanged"
        )
    return DatasetWriteError(f"{what} failed: {e}")


class DatasetWarning(UserWarning):
    """A dataset opens, but holds something this package does not know (e.g. fields of a newer LeRobot)."""
