"""The checkpoint the workspace ships: found in vla_policy's share directory when it is there, else None."""

from __future__ import annotations

import subprocess
import sys

import ament_index_python.packages as packages
import pytest
from vla_policy.shipped import default_checkpoint


@pytest.fixture
def share(tmp_path, monkeypatch):
    """vla_policy's share directory, as the ament index reports it."""
    root = tmp_path / "install" / "share" / "vla_policy"
    root.mkdir(parents=True)
    asked = []

    def share_directory(package: str) -> str:
        asked.append(package)
        return str(root)

    monkeypatch.setattr(packages, "get_package_share_directory", share_directory)
    return root, asked


def test_the_installed_default_checkpoint_is_found(share):
    root, asked = share
    checkpoint = root / "checkpoints" / "default"
    checkpoint.mkdir(parents=True)
    (checkpoint / "embodiment.json").write_text("{}")
    assert default_checkpoint() == checkpoint.resolve()
    assert asked == ["vla_policy"]


def test_no_checkpoint_shipped_is_none(share):
    root, _ = share
    assert default_checkpoint() is None
    (root / "checkpoints" / "default").mkdir(parents=True)  # a folder without a checkpoint in it
    (root / "checkpoints" / "default" / "MODEL_CARD.md").write_text("not trained yet")
    assert default_checkpoint() is None


def test_without_the_package_or_the_ament_index_there_is_none(monkeypatch):
    def missing(package: str) -> str:
        raise packages.PackageNotFoundError(package)

    monkeypatch.setattr(packages, "get_package_share_directory", missing)
    assert default_checkpoint() is None
    monkeypatch.setitem(sys.modules, "ament_index_python.packages", None)  # the import raises ImportError
    assert default_checkpoint() is None


def test_the_lookup_does_not_import_torch():
    # The bringup plan imports it to build its command lines.
    code = "import sys, vla_policy.shipped, vla_bringup.plan; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
