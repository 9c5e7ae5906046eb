#!/usr/bin/env bash
# The LeRobot venv: LeRobot 0.6.1 (Python >= 3.12, torch < 2.12) and our server, apart from the main .venv.
# `vla-serve --backend lerobot` runs a LeRobot-trained policy from here; `lerobot-train` trains on our datasets.
# It is never part of the default install (scripts/setup.sh does not call it).
#
# Idempotent: a second run skips pip when the pins below did not change. Our pure-Python packages (vla_common,
# vla_perception, vla_policy) are made importable through a .pth file pointing at src/, so edits are live and
# nothing of ours is built here; rclpy is not installed and the serve path does not need it.
#
# Env: PYTHON (a Python >= 3.12; default: the first of python3.12, python3.13, python3, pyenv's 3.12/3.13),
#      VLA_LEROBOT_VENV (default .venv-lerobot).
# Measured (2 cores, Python 3.12.1): a fresh venv in 2 min 24 s (pip 133 s, torch 2.11.0+cu130 with its CUDA
# libraries downloaded), 5.5 GB on disk (du -sh); a second run, nothing to install, 8 s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${VLA_LEROBOT_VENV:-$root/.venv-lerobot}"

# The pins. torch/torchvision: the newest pair LeRobot 0.6.1 accepts (torch<2.12, torchvision<0.27).
LEROBOT_PIN="lerobot[training]==0.6.1"
TORCH_PINS=(torch==2.11.0 torchvision==0.26.0)
SERVER_PINS=(websockets==17.4)  # what vla_policy.serve needs beyond LeRobot's own (numpy, opencv)

say() { printf '\033[1m[setup-lerobot]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[setup-lerobot] error:\033[0m %s\n' "$*" >&2; exit 1; }

ok_python() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 12) else 1)' 2>/dev/null; }

if [ -n "${PYTHON:-}" ]; then
  command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON not found"
  ok_python "$PYTHON" || die "PYTHON=$PYTHON is $("$PYTHON" -V 2>&1); LeRobot 0.6.1 needs Python >= 3.12"
  python="$PYTHON"
else
  python=""
  pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
  for candidate in python3.12 python3.13 python3 "$pyenv_root"/versions/3.12*/bin/python "$pyenv_root"/versions/3.13*/bin/python; do
    if command -v "$candidate" >/dev/null 2>&1 && ok_python "$(command -v "$candidate")"; then
      python="$(command -v "$candidate")"
      break
    fi
  done
  [ -n "$python" ] || die "no Python >= 3.12 found (LeRobot 0.6.1 needs it); install one and run PYTHON=/path/to/python3.12 $0"
fi

# A venv made by another interpreter (or an older one) is not reused.
if [ -x "$venv/bin/python" ] && ! ok_python "$venv/bin/python"; then
  die "$venv exists with $("$venv/bin/python" -V 2>&1); remove it and run again"
fi
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv ($("$python" -V 2>&1): $python)"
  # Not from inside the main venv's environment: its PYTHONPATH and ROS variables are for another Python.
  env -u PYTHONPATH -u VIRTUAL_ENV "$python" -m venv "$venv"
fi

stamp="$venv/.vla-lerobot.sha256"
want="$(printf '%s\n' "$LEROBOT_PIN" "${TORCH_PINS[@]}" "${SERVER_PINS[@]}" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  free_gb="$(df -Pk "$(dirname "$venv")" | awk 'NR==2 {print int($4 / 1048576)}')"
  [ "$free_gb" -ge 15 ] || die "only ${free_gb} GB free beside $venv; the LeRobot venv needs about 10 GB plus pip's downloads"
  say "installing $LEROBOT_PIN, ${TORCH_PINS[*]} (torch for Python 3.12 is a multi-GB CUDA build: minutes)"
  started=$SECONDS
  if ! env -u PYTHONPATH "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
    "$LEROBOT_PIN" "${TORCH_PINS[@]}" "${SERVER_PINS[@]}" 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; then
    die "pip install failed (see above)"
  fi
  say "pip took $((SECONDS - started)) s"
  echo "$want" >"$stamp"
else
  say "dependencies up to date ($venv)"
fi

# Our packages, importable without building or installing them (no rclpy: the serve path does not use it).
site="$(env -u PYTHONPATH "$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n' "$root/src/vla_common" "$root/src/vla_perception" "$root/src/vla_policy" >"$site/vla_ros.pth"
# vla-serve in this venv: the module, run by this venv's Python.
cat >"$venv/bin/vla-serve" <<EOF
#!/bin/sh
unset PYTHONPATH
exec "$venv/bin/python" -m vla_policy.serve "\$@"
EOF
chmod +x "$venv/bin/vla-serve"

env -u PYTHONPATH "$venv/bin/python" - <<'EOF' || die "the LeRobot venv does not import (see above)"
import importlib.metadata as md
import sys

import lerobot.policies.factory  # noqa: F401
import torch
import vla_policy.serve  # noqa: F401

assert "rclpy" not in sys.modules, "the serve path imported rclpy"
print(f"[setup-lerobot] lerobot {md.version('lerobot')}, torch {torch.__version__}, Python {sys.version.split()[0]}")
EOF
say "done ($(du -sh "$venv" | cut -f1)). Serve a LeRobot policy with:  $venv/bin/vla-serve --backend lerobot --model <dir>"
