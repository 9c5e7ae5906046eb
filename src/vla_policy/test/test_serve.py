"""vla-serve as a command: refuses to start without a token or a model, serves a checkpoint to the remote client."""

import os
import subprocess
import sys

import numpy as np
import pytest
from vla_policy.serve import READY_PREFIX, main, read_token


def test_refuses_to_start_without_a_token(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("VLA_SERVE_TOKEN", raising=False)
    assert main(["--backend", "native", "--model", str(tmp_path)]) == 2
    assert "no auth token" in caplog.text


def test_refuses_half_a_tls_configuration(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("VLA_SERVE_TOKEN", "t")
    assert main(["--backend", "native", "--model", str(tmp_path), "--tls-cert", "cert.pem"]) == 2
    assert "go together" in caplog.text


def test_refuses_a_directory_without_a_model(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("VLA_SERVE_TOKEN", "t")
    assert main(["--backend", "native", "--model", str(tmp_path)]) == 2
    assert "embodiment manifest" in caplog.text


def test_token_file_wins_and_must_not_be_empty(monkeypatch, tmp_path):
    monkeypatch.setenv("VLA_SERVE_TOKEN", "from-env")
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert read_token(str(token_file)) == "from-file"
    assert read_token(None) == "from-env"
    token_file.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        read_token(str(token_file))


def test_serves_a_checkpoint_over_the_network_interface_it_is_given(tmp_path):
    """The real command in its own process, listening on localhost only, answering the remote client."""
    from test_backend_native import observation, train_tiny_checkpoint
    from vla_policy.backends import load_remote_backend

    from vla_policy import load_policy

    checkpoint = train_tiny_checkpoint(tmp_path)
    token_file = tmp_path / "token"
    token_file.write_text("file-token")
    command = [
        sys.executable, "-m", "vla_policy.serve", "--backend", "native", "--model", str(checkpoint),
        "--port", "0", "--token-file", str(token_file), "--child",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "VLA_SERVE_TOKEN"}
    proc = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(READY_PREFIX), line
        port = int(line[len(READY_PREFIX) :])
        psutil = pytest.importorskip("psutil")
        listening = [c for c in psutil.Process(proc.pid).net_connections() if c.status == "LISTEN"]
        assert [c.laddr.ip for c in listening] == ["127.0.0.1"]
        remote = load_remote_backend(f"ws://127.0.0.1:{port}", "file-token", timeout_s=10.0)
        chunk = remote.policy.infer(observation())
        expected = load_policy(checkpoint).infer(observation())
        np.testing.assert_allclose(chunk.actions, expected.actions, atol=1e-5)
        remote.policy.close()
    finally:
        proc.stdin.close()  # a --child server exits when its stdin closes
        assert proc.wait(10) == 0
