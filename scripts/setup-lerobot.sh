#!/usr/bin/env bash
# The LeRobot venv: LeRobot 0.6.1 (Python >= 3.12, torch < 2.12) and our server, apart from the main .venv.
# `vla-serve --backend lerobot` runs a LeRobot-trained policy from here; `lerobot-train` trains on our datasets.
# It is never part of the default install (scripts/setup.sh does not call it).
#
#   scripts/setup-lerobot.sh              make or update the venv: the pins below, every other package held to
#                                         requirements-lerobot.txt (pip's constraints, -c)
#   scripts/setup-lerobot.sh --refreeze   after changing a pin: install the pins alone (the newest versions
#                                         that fit them), then rewrite requirements-lerobot.txt from pip freeze
#
# Idempotent: a second run skips pip when neither the pins nor requirements-lerobot.txt changed. Our pure-Python
# packages (vla_common, vla_perception, vla_policy) are made importable through a .pth file pointing at src/,
# so edits are live and nothing of ours is built here; rclpy is not installed and the serve path does not need it.
#
# Env: PYTHON (a Python >= 3.12 with its venv module; default: the first of python3.12, python3.13, python3,
#      pyenv's 3.12/3.13), VLA_LEROBOT_VENV (default .venv-lerobot).
# Measured (2 cores, Python 3.12.1): a fresh venv in 2 min 24 s (pip 133 s, torch 2.11.0+cu130 with its CUDA
# libraries downloaded), 5.5 GB on disk (du -sh); a second run, nothing to install, 8 s.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${VLA_LEROBOT_VENV:-$root/.venv-lerobot}"
refreeze=0
case "${1:-}" in
  "") ;;
  --refreeze) refreeze=1 ;;
  *) echo "usage: $0 [--refreeze]" >&2; exit 2 ;;
esac

# The pins. torch/torchvision: the newest pair LeRobot 0.6.1 accepts (torch<2.12, torchvision<0.27).
# The diffusion extra is diffusers, without which LeRobot's Diffusion Policy does not load.
LEROBOT_PIN="lerobot[training,diffusion]==0.6.1"
TORCH_PINS=(torch==2.11.0 torchvision==0.26.0)
SERVER_PINS=(websockets==17.4)  # what vla_policy.serve needs beyond LeRobot's own (numpy, opencv)
CONSTRAINTS="$root/requirements-lerobot.txt"  # everything else the pins pull in, frozen

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

# What the main venv's environment sets for its own Python and ROS (PYTHONPATH, LD_LIBRARY_PATH, AMENT_*, ...):
# never seen by this venv's Python. The one list is vla_policy.serve._FOREIGN_ENV, which vla-serve's own
# hand-over strips; read from the source (no import: this Python may have none of our dependencies).
foreign_env="$("$python" -I - "$root/src/vla_policy/vla_policy/serve.py" <<'EOF'
import ast
import sys

for node in ast.parse(open(sys.argv[1]).read()).body:
    if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_FOREIGN_ENV" for t in node.targets):
        print(" ".join(ast.literal_eval(node.value)))
EOF
)" || die "could not read _FOREIGN_ENV from src/vla_policy/vla_policy/serve.py"
[ -n "$foreign_env" ] || die "src/vla_policy/vla_policy/serve.py defines no _FOREIGN_ENV"
clean=(env)
for name in $foreign_env; do clean+=(-u "$name"); done

venv_python="$venv/bin/python"
has_pip() { "${clean[@]}" "$venv_python" -m pip --version >/dev/null 2>&1; }

# A venv made by another interpreter (or an older one) is not reused.
if [ -x "$venv_python" ] && ! ok_python "$venv_python"; then
  die "$venv exists with $("$venv_python" -V 2>&1); remove it and run again"
fi
if [ ! -x "$venv_python" ] || ! has_pip; then
  # Debian/Ubuntu ship venv's ensurepip apart (python3.X-venv): without it `venv` leaves a Python with no pip.
  if ! "${clean[@]}" "$python" -c 'import ensurepip, venv' 2>/dev/null; then
    minor="$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    die "$python has no ensurepip module, so its venv would have no pip: install it (Debian/Ubuntu: sudo apt install python$minor-venv) or run PYTHON=/path/to/another/python3.12 $0"
  fi
  if [ -x "$venv_python" ]; then
    say "$venv has no pip (made without ensurepip?): making it again"
    clear=(--clear)
  else
    say "creating $venv ($("$python" -V 2>&1): $python)"
    clear=()
  fi
  # Not from inside the main venv's environment: its PYTHONPATH and ROS variables are for another Python.
  "${clean[@]}" "$python" -m venv "${clear[@]}" "$venv"
  has_pip || die "$venv_python -m pip does not run after making the venv (see above)"
fi

[ "$refreeze" = 1 ] || [ -f "$CONSTRAINTS" ] || die "$CONSTRAINTS is missing: restore it (git) or run $0 --refreeze"
stamp="$venv/.vla-lerobot.sha256"
# The stamp: the pins and the frozen versions (none yet on a first --refreeze).
pins_hash() { { printf '%s\n' "$LEROBOT_PIN" "${TORCH_PINS[@]}" "${SERVER_PINS[@]}"; cat "$CONSTRAINTS" 2>/dev/null || true; } | sha256sum | cut -d' ' -f1; }
want="$(pins_hash)"
if [ "$refreeze" = 1 ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  free_gb="$(df -Pk "$(dirname "$venv")" | awk 'NR==2 {print int($4 / 1048576)}')"
  [ "$free_gb" -ge 15 ] || die "only ${free_gb} GB free beside $venv; the LeRobot venv needs about 10 GB plus pip's downloads"
  constraints=(-c "$CONSTRAINTS")
  if [ "$refreeze" = 1 ]; then constraints=(); fi
  say "installing $LEROBOT_PIN, ${TORCH_PINS[*]}${constraints[*]:+, the rest held to $(basename "$CONSTRAINTS")} (torch for Python 3.12 is a multi-GB CUDA build: minutes)"
  started=$SECONDS
  if ! "${clean[@]}" "$venv_python" -m pip install --disable-pip-version-check --progress-bar off \
    "${constraints[@]}" "$LEROBOT_PIN" "${TORCH_PINS[@]}" "${SERVER_PINS[@]}" 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; then
    die "pip install failed (see above)"
  fi
  say "pip took $((SECONDS - started)) s"
  if [ "$refreeze" = 1 ]; then
    {
      echo "# What scripts/setup-lerobot.sh installs in the LeRobot venv, every package frozen (pip freeze after"
      echo "# scripts/setup-lerobot.sh --refreeze), used as pip's constraints (-c): a later install gets these versions."
      echo "# Made on $(uname -s) $(uname -m), Python $("$venv_python" -c 'import sys; print(sys.version.split()[0])'); a package another platform does not install is ignored."
      # Not our own packages (importable through the .pth, never installed here; excluded should one be).
      "${clean[@]}" "$venv_python" -m pip freeze --disable-pip-version-check | grep -viE '^(-e |vla[-_])'
    } >"$CONSTRAINTS.tmp"
    mv "$CONSTRAINTS.tmp" "$CONSTRAINTS"
    say "wrote $CONSTRAINTS ($(grep -c '==' "$CONSTRAINTS") packages): commit it"
    want="$(pins_hash)"
  fi
  echo "$want" >"$stamp"
else
  say "dependencies up to date ($venv)"
fi

# Our packages, importable without building or installing them (no rclpy: the serve path does not use it).
site="$("${clean[@]}" "$venv_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
printf '%s\n' "$root/src/vla_common" "$root/src/vla_perception" "$root/src/vla_policy" >"$site/vla_ros.pth"
# vla-serve in this venv: the module, run by this venv's Python, without the main venv's environment.
cat >"$venv/bin/vla-serve" <<EOF
#!/bin/sh
# Written by scripts/setup-lerobot.sh. Unsets what vla_policy.serve._FOREIGN_ENV names, as vla-serve's own
# hand-over to this venv does (run the script again when that list changes).
unset $foreign_env
exec "$venv_python" -m vla_policy.serve "\$@"
EOF
chmod +x "$venv/bin/vla-serve"

"${clean[@]}" "$venv_python" - <<'EOF' || die "the LeRobot venv does not import (see above)"
import importlib.metadata as md
import sys

import diffusers  # noqa: F401  (LeRobot's Diffusion Policy)
import lerobot.policies.factory  # noqa: F401
import torch
import vla_policy.backends.lerobot  # noqa: F401
import vla_policy.backends.lerobot_io  # noqa: F401  (OpenCV)
import vla_policy.serve  # noqa: F401

assert "rclpy" not in sys.modules, "the serve path imported rclpy"
print(f"[setup-lerobot] lerobot {md.version('lerobot')}, torch {torch.__version__}, Python {sys.version.split()[0]}")
EOF
say "done ($(du -sh "$venv" | cut -f1)). Serve a LeRobot policy with:  $venv/bin/vla-serve --backend lerobot --model <dir>"
