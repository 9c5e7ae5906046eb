"""Tests find the shared fixtures relative to the repository, wherever it is cloned."""

from vla_common.testing import shared_fixtures


def test_shared_fixtures_is_beside_the_repository(tmp_path):
    test_file = tmp_path / "repo" / "src" / "vla_x" / "test" / "test_y.py"
    assert shared_fixtures(test_file) == tmp_path / "shared" / "fixtures"
