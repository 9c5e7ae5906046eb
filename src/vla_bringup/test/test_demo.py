"""vla-demo's choice of commander: the shipped VLA policy by default, the scripted expert when asked or when
no checkpoint ships (and it says so). The stack itself is not started here."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from vla_bringup.demo import DemoConfig, resolve_commander

from vla_bringup import demo


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    path = tmp_path / "share" / "vla_policy" / "checkpoints" / "default"
    monkeypatch.setattr(demo, "default_checkpoint", lambda: path)
    return str(path)


@pytest.fixture
def none_shipped(monkeypatch):
    monkeypatch.setattr(demo, "default_checkpoint", lambda: None)


def test_the_shipped_checkpoint_is_the_default_policy(shipped):
    assert resolve_commander(None, "", "") == ("policy", shipped)
    assert resolve_commander("policy", "", "") == ("policy", shipped)


def test_a_given_model_wins_over_the_shipped_one(shipped):
    assert resolve_commander(None, "outputs/run/best", "") == ("policy", "outputs/run/best")
    assert resolve_commander("policy", "outputs/run/best", "") == ("policy", "outputs/run/best")


def test_the_expert_when_asked_or_recording(shipped):
    assert resolve_commander("expert", "", "") == ("expert", "")
    assert resolve_commander(None, "", "outputs/demos") == ("expert", "")  # recording: the expert's demos


def test_without_a_shipped_checkpoint_the_expert_commands(none_shipped):
    assert resolve_commander(None, "", "") == ("expert", "")
    assert resolve_commander(None, "m", "") == ("policy", "m")
    # Asking for the policy with no checkpoint anywhere stays a clear error.
    commander, model = resolve_commander("policy", "", "")
    with pytest.raises(ValueError, match="--model"):
        DemoConfig(commander, model, ("pick",), 1, 0, "train", Path("o"), 1.0, 1.0)


def test_the_stack_is_told_the_instruction_split():
    from vla_bringup.demo import vla_up_argv

    for split in ("train", "heldout"):
        config = DemoConfig("expert", "", ("pick",), 1, 0, split, Path("o"), 1.0, 1.0)
        assert f"split:={split}" in vla_up_argv(config)


def test_the_stack_is_told_the_real_time_factor():
    from vla_bringup.demo import vla_up_argv

    config = DemoConfig("expert", "", ("pick",), 1, 0, "train", Path("o"), 1.0, 1.0, real_time_factor=0.5)
    assert "real_time_factor:=0.5" in vla_up_argv(config)
    with pytest.raises(ValueError, match="real-time-factor"):
        DemoConfig("expert", "", ("pick",), 1, 0, "train", Path("o"), 1.0, 1.0, real_time_factor=0.0)


@pytest.fixture
def started(monkeypatch, tmp_path):
    """main() up to starting the stack: the DemoConfig it would run with (the stack is not started)."""
    configs = []

    def run(config):
        configs.append(config)
        raise RuntimeError("the stack is not started in this test")

    monkeypatch.setattr(demo, "run", run)
    monkeypatch.setattr(
        demo, "vla_up_argv", lambda config: ["vla-up", "sim", f"commander:={config.commander}"]
    )
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # main's SIGTERM handler stays out of pytest

    def main(*argv: str) -> int:
        return demo.main([*argv, "--out", str(tmp_path / "demo")])

    return main, configs


def test_main_runs_the_shipped_policy_by_default(shipped, started, capsys):
    main, configs = started
    assert main() == 1  # the fake stack fails to start
    assert (configs[0].commander, configs[0].model) == ("policy", shipped)
    assert f"the VLA policy {shipped} commands the arm" in capsys.readouterr().out
    assert configs[0].real_time_factor == 0.5  # the policy's sim at half speed, so a 2-core machine keeps up


def test_main_falls_back_to_the_expert_and_says_so(none_shipped, started, capsys):
    main, configs = started
    assert main() == 1
    assert (configs[0].commander, configs[0].model) == ("expert", "")
    assert "none ships, so the scripted expert commands the arm" in capsys.readouterr().out


def test_main_runs_the_expert_when_asked_without_the_fallback_notice(shipped, started, capsys):
    main, configs = started
    assert main("--commander", "expert") == 1
    assert (configs[0].commander, configs[0].model) == ("expert", "")
    assert configs[0].real_time_factor == 1.0
    assert main("--real-time-factor", "0.25") == 1 and configs[1].real_time_factor == 0.25
    assert "none ships" not in capsys.readouterr().out


def test_main_refuses_the_policy_without_any_checkpoint(none_shipped, started, capsys):
    main, configs = started
    assert main("--commander", "policy") == 2
    assert configs == [] and "--commander policy needs --model" in capsys.readouterr().err


def _checkpoint_with_instructions(root: Path, instructions: list[str]) -> str:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"info": {"instructions": instructions}}))
    return str(root)


def test_the_policy_runs_the_families_it_was_trained_on(tmp_path):
    pick_only = _checkpoint_with_instructions(
        tmp_path / "a", ["pick up the red block", "grasp the blue block and lift it"]
    )
    both = _checkpoint_with_instructions(
        tmp_path / "b", ["pick up the red block", "put the red block on the blue block"]
    )
    assert demo.trained_families(pick_only) == ("pick",)
    assert demo.trained_families(both) == ("pick", "stack")  # in the demo's family order
    # Unknown sentences or no record: every family.
    assert demo.trained_families(_checkpoint_with_instructions(tmp_path / "c", ["dance"])) == demo.FAMILIES
    assert demo.trained_families(str(tmp_path / "missing")) == demo.FAMILIES


def test_main_runs_the_shipped_policy_on_its_families_ten_episodes_in_all(tmp_path, started, monkeypatch):
    model = _checkpoint_with_instructions(tmp_path / "m", ["pick up the red block"])
    main, configs = started
    assert main("--model", model) == 1
    assert configs[0].families == ("pick",) and configs[0].episodes == 10
    assert main("--model", model, "--families", "pick,push", "--episodes", "3") == 1
    assert configs[1].families == ("pick", "push") and configs[1].episodes == 3
