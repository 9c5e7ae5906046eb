"""The checkpoint that ships in src/vla_policy/checkpoints/default: it loads, fits the simulator, and drives.

``vla-demo`` and the sim plan run it by default, so these tests guard what a fresh clone's ``make demo`` does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "default"
MAX_BYTES = 50 * 2**20


def test_the_workspace_ships_a_checkpoint_with_its_model_card():
    assert (SHIPPED / "embodiment.json").is_file(), f"no checkpoint at {SHIPPED}"
    card = (SHIPPED / "MODEL_CARD.md").read_text()
    for section in ("## Data", "## Training", "## Results", "## Latency", "out of distribution"):
        assert section in card, section
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size <= MAX_BYTES, f"{size / 2**20:.1f} MiB > 50 MiB"
    assert not list(SHIPPED.rglob("*.pt")) and not list(SHIPPED.rglob("*.pkl")), "safetensors only"


def test_the_shipped_checkpoint_loads_and_its_manifest_matches_the_simulator():
    from vla_common.robots import PANDA_COMMAND_JOINTS
    from vla_sim.scene import CameraConfig

    from vla_policy import load_policy

    policy = load_policy(SHIPPED)
    manifest = policy.manifest
    assert tuple(manifest.joint_names) == tuple(PANDA_COMMAND_JOINTS)
    assert tuple(manifest.action_names) == tuple(PANDA_COMMAND_JOINTS)
    assert manifest.fps == 10  # the simulator's default control rate, which the demonstrations used
    for camera in manifest.cameras:
        CameraConfig(name=camera.name, width=camera.width, height=camera.height)  # the sim renders it
    info = json.loads((SHIPPED / "config.json").read_text()).get("info", {})
    assert info.get("instructions"), "the out-of-distribution check needs the training instructions"
    obs = {
        **{
            f"observation.images.{c.name}": np.zeros((c.height, c.width, 3), np.uint8)
            for c in manifest.cameras
        },
        "observation.state": np.zeros(len(PANDA_COMMAND_JOINTS), np.float32),
        "task": "pick up the red block",
    }
    chunk = policy.infer(obs)
    assert chunk.actions.shape == (policy.horizon, len(PANDA_COMMAND_JOINTS))
    assert np.all(np.isfinite(chunk.actions))
    assert policy.held_referents is None  # pick is the MLP's
    # Stack, place and push are the held pathway's: it looks once (its own tuned look) and holds the block's
    # and the goal's positions.
    assert policy.config.held_look
    for task in (
        "stack the red block on the blue block",
        "put the red block in the bowl",
        "push the red block to the left",
    ):
        policy.reset()
        chunk = policy.infer({**obs, "task": task})
        assert np.all(np.isfinite(chunk.actions)) and policy.held_referents.shape == (6,), task


@pytest.mark.heavy
def test_the_shipped_checkpoint_succeeds_in_closed_loop():
    """A few pick episodes on the seeds the model card reports (6/6 there): it must succeed in most."""
    from vla_policy.evaluate import closed_loop

    from vla_policy import load_policy

    policy = load_policy(SHIPPED)
    outcomes = closed_loop(
        policy, "shipped", families=["pick"], splits=["train"], episodes=6, seed=1000, execute_steps=5,
        progress=False,
    )  # fmt: skip
    assert sum(o.success for o in outcomes) >= 4, [o.success for o in outcomes]
