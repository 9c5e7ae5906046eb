"""The shipped parameter file lists every node parameter with its default (one place for each concept)."""

from pathlib import Path

import yaml
from vla_collector.collector_node import PARAMETERS, config_from_parameters

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
