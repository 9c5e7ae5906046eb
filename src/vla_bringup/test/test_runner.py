"""vla-up's supervisor: output prefixes, signal forwarding, required-node failure, clean exit codes.

The supervised children here are small real processes written by the test (the runner is what is under
test); test_bringup_e2e.py runs the real plan with the real nodes.
"""

import io
import os
import signal
import sys
import textwrap
import threading
import time

import pytest
from vla_bringup.plan import NodeSpec, ParamFile
from vla_bringup.runner import ProcessSpec, ResolveError, Supervisor, main, parse_assignments, ros_args

CHILD = textwrap.dedent(
    """
    import signal, sys, time
    name, behaviour = sys.argv[1], sys.argv[2]
    def on_int(*_):
        print(f"{name} got SIGINT", flush=True)
        sys.exit(0 if behaviour != "ignore_int" else None)
    signal.signal(signal.SIGINT, on_int if behaviour != "ignore_int" else signal.SIG_IGN)
    print(f"{name} up", flush=True)
    if behaviour == "crash":
        time.sleep(0.3)
        sys.exit(3)
    if behaviour == "finish":
        sys.exit(0)
    while True:
        time.sleep(0.05)
    """
)


@pytest.fixture
def child(tmp_path):
    path = tmp_path / "child.py"
    path.write_text(CHILD)

    def make(name, behaviour="run", required=True):
        return ProcessSpec(name=name, argv=(sys.executable, str(path), name, behaviour), required=required)

    return make


def run_in_thread(supervisor):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", supervisor.run()), daemon=True)
    thread.start()
    return thread, result


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_stop_request_forwards_sigint_and_exits_zero(child):
    out = io.StringIO()
    sup = Supervisor([child("alpha"), child("beta")], grace_s=5.0, out=out)
    thread, result = run_in_thread(sup)
    assert wait_for(lambda: "alpha up" in out.getvalue() and "beta up" in out.getvalue())
    sup.request_stop("signal SIGINT")
    thread.join(20)
    assert result["code"] == 0
    text = out.getvalue()
    assert "[alpha ] alpha got SIGINT" in text or "[alpha] alpha got SIGINT" in text
    assert "beta got SIGINT" in text
    assert all(line.startswith("[") for line in text.splitlines())


def test_required_node_crash_stops_everything_and_fails(child):
    out = io.StringIO()
    sup = Supervisor([child("steady"), child("flaky", "crash")], grace_s=5.0, out=out)
    thread, result = run_in_thread(sup)
    thread.join(30)
    assert result["code"] == 1
    assert "required node flaky exited with code 3" in out.getvalue()
    assert "steady got SIGINT" in out.getvalue()


def test_optional_node_crash_is_reported_but_tolerated(child):
    out = io.StringIO()
    sup = Supervisor([child("steady"), child("extra", "crash", required=False)], grace_s=5.0, out=out)
    thread, result = run_in_thread(sup)
    assert wait_for(lambda: "optional node extra exited with code 3" in out.getvalue())
    assert thread.is_alive(), "an optional node's crash must not stop the plan"
    sup.request_stop("test done")
    thread.join(20)
    assert result["code"] == 1, "the crashed optional node still makes the run unclean"


def test_node_ignoring_sigint_is_escalated(child):
    out = io.StringIO()
    sup = Supervisor([child("stubborn", "ignore_int")], grace_s=0.5, out=out)
    thread, result = run_in_thread(sup)
    assert wait_for(lambda: "stubborn up" in out.getvalue())
    sup.request_stop("test")
    thread.join(20)
    assert "escalating" in out.getvalue()
    assert result["code"] == 1, "a node that needed more than SIGINT did not shut down cleanly"
    assert sup._procs["stubborn"].returncode in (-signal.SIGTERM, -signal.SIGKILL)


def test_start_failure_is_an_error(tmp_path):
    out = io.StringIO()
    sup = Supervisor([ProcessSpec("ghost", (str(tmp_path / "missing"),))], grace_s=1.0, out=out)
    assert sup.run() == 1
    assert "could not start" in out.getvalue()


def test_ros_args_order_and_encoding(tmp_path, monkeypatch):
    node = NodeSpec(
        name="safety_node",
        package="vla_safety",
        executable="safety_node",
        parameters={"use_sim_time": True, "rate": 250.0, "joints": ["a", "b"], "profile": "panda"},
        remappings=(("/joint_commands", "/joint_command"),),
    )
    argv = ros_args(node, "warn")
    assert argv[:5] == ["--ros-args", "-r", "__node:=safety_node", "--log-level", "warn"]
    assert "use_sim_time:=true" in argv
    assert 'joints:=["a", "b"]' in argv
    assert 'profile:="panda"' in argv
    assert argv[-2:] == ["-r", "/joint_commands:=/joint_command"]


def test_missing_param_file_is_a_clear_error():
    node = NodeSpec(
        "sim_node", "vla_sim", "sim_node", param_files=(ParamFile("vla_sim", "config/nope.yaml"),)
    )
    with pytest.raises(ResolveError, match=r"nope\.yaml"):
        ros_args(node)


def test_cli_rejects_bad_arguments(capsys):
    assert main(["sim", "robot=panda"]) == 2
    assert "name:=value" in capsys.readouterr().err
    assert main(["sim", "colour:=red"]) == 2
    assert main(["sim", "--args"]) == 0
    assert "commander" in capsys.readouterr().out
    with pytest.raises(ValueError):
        parse_assignments([":=x"]) if False else (_ for _ in ()).throw(ValueError)


def test_dry_run_prints_resolved_commands(capsys):
    if not os.environ.get("AMENT_PREFIX_PATH"):
        pytest.skip("needs the built workspace (source scripts/env.sh)")
    code = main(["record", "--dry-run"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "collector_node" in out.out and "--params-file" in out.out


def test_image_processes_get_the_large_image_transport_unless_the_user_chose_one():
    if not os.environ.get("AMENT_PREFIX_PATH"):
        pytest.skip("needs the built workspace (source scripts/env.sh)")
    from vla_bringup.plan import build_plan
    from vla_bringup.runner import resolve, transport_note

    plan = build_plan("robot", {"model": "/nonexistent/model"})
    envs = {p.name: p.env for p in resolve(plan, environ={})}
    profile = envs["front_camera"]["FASTRTPS_DEFAULT_PROFILES_FILE"]
    assert profile.endswith("share/vla_perception/config/fastdds_profile.xml") and os.path.isfile(profile)
    for name in ("front_camera", "policy_node"):
        assert envs[name] == {
            "FASTRTPS_DEFAULT_PROFILES_FILE": profile,
            "FASTDDS_DEFAULT_PROFILES_FILE": profile,
        }, name
    assert envs["safety_node"] == {}
    assert "front_camera, policy_node get the large shared-memory" in transport_note(plan, environ={})
    # a transport the user set up is theirs: nothing added, and vla-up says what it keeps
    own = {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}
    assert all(p.env == {} for p in resolve(plan, environ=own))
    assert transport_note(plan, environ=own) == (
        "image transport: keeping your FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for front_camera, policy_node"
    )


def test_the_supervisor_starts_a_process_with_its_environment(tmp_path):
    script = tmp_path / "env.py"
    script.write_text("import os\nprint('profile=' + os.environ.get('FASTRTPS_DEFAULT_PROFILES_FILE', ''))\n")
    out = io.StringIO()
    spec = ProcessSpec(
        "camera", (sys.executable, str(script)), env={"FASTRTPS_DEFAULT_PROFILES_FILE": "/x/profile.xml"}
    )
    Supervisor([spec], grace_s=1.0, out=out).run()
    assert "profile=/x/profile.xml" in out.getvalue()
