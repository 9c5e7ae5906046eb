"""Where the checkpoint that ships with the workspace lives (no torch import: the bringup plan reads it).

``src/vla_policy/checkpoints/default`` in the source tree, installed to ``share/vla_policy/checkpoints/default``;
its ``MODEL_CARD.md`` says how it was made and what it scores.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_CHECKPOINT = "checkpoints/default"
_MARKER = "embodiment.json"  # every checkpoint has one


def default_checkpoint() -> Path | None:
    """The installed default checkpoint directory, or None when the workspace ships none."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return None
    try:
        share = Path(get_package_share_directory("vla_policy"))
    except PackageNotFoundError:
        return None
    path = share / DEFAULT_CHECKPOINT
    return path.resolve() if (path / _MARKER).is_file() else None
