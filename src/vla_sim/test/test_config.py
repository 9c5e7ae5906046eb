"""The shipped parameter files list exactly the parameters the nodes declare, with the same defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CONFIG = Path(__file__).resolve().parents[1] / "config"


@pytest.mark.parametrize("node", ["sim_node", "expert_node"])
def test_parameter_file_matches_the_node(node):
    module = __import__(f"vla_sim.{node}", fromlist=["PARAMETERS"])
    values = yaml.safe_load((CONFIG / f"{node}.yaml").read_text())[node]["ros__parameters"]
    assert set(values) == set(module.PARAMETERS)
    for name, (default, description) in module.PARAMETERS.items():
        assert values[name] == default, name
        assert description
