"""The shipped parameter file lists every node parameter with its default (one place for each concept)."""

from pathlib import Path

import pytest
import yaml
from vla_collector.collector_node import PARAMETERS, config_from_parameters
from vla_collector.lerobot import DatasetError

CONFIG = Path(__file__).resolve().parents[1] / "config" / "collector_node.yaml"


def test_parameter_file_matches_the_node():
    params = yaml.safe_load(CONFIG.read_text())["collector_node"]["ros__parameters"]
    assert params == {name: default for name, (default, _) in PARAMETERS.items()}
    assert all(description for _, description in PARAMETERS.values())


def test_defaults_make_a_valid_config(tmp_path):
    params = {name: default for name, (default, _) in PARAMETERS.items()}
    config = config_from_parameters({**params, "dataset_root": str(tmp_path / "ds")})
    assert config.raw_root == tmp_path / "ds.raw" and config.fps == 10
    assert config.action_names == config.state_names and len(config.state_names) == 8
    assert config.sampler_config.action_lookahead_s == 0.1
    assert config.video.preset == 12  # '' = the codec's default
    spec = config.target().spec([])
    assert (spec.data_files_size_in_mb, spec.video_files_size_in_mb) == (100, 200)  # LeRobot's


def test_video_preset_takes_an_int_or_a_name_and_size_limits_reach_the_dataset(tmp_path):
    params = {name: default for name, (default, _) in PARAMETERS.items()}
    params.update(dataset_root=str(tmp_path / "ds"), data_files_size_in_mb=5, video_files_size_in_mb=50)
    for codec, preset, used in (
        ("libsvtav1", 8, 8),
        ("libsvtav1", "8", 8),
        ("libx264", "", "veryfast"),
        ("libx264", "ultrafast", "ultrafast"),
    ):
        config = config_from_parameters({**params, "video_codec": codec, "video_preset": preset})
        assert config.video.preset == used
        spec = config.target().spec([])
        assert spec.video.preset == used
        assert (spec.data_files_size_in_mb, spec.video_files_size_in_mb) == (5, 50)
    with pytest.raises(DatasetError, match="x264 preset"):
        config_from_parameters({**params, "video_codec": "libx264", "video_preset": 12})
    with pytest.raises(ValueError, match="data_files_size_in_mb"):
        config_from_parameters({**params, "data_files_size_in_mb": 0})
