#!/usr/bin/env bash
# One setup path: creates .venv, installs the pins from requirements.txt, builds the workspace with colcon.
# Idempotent: a second run skips pip when requirements.txt is unchanged and colcon rebuilds only what changed.
# Where ROS 2 Jazzy is already sourced (ROS_DISTRO=jazzy), the venv sees that ROS and the ros-jazzy-* wheels
# are skipped. Env: PYTHON (interpreter, default python3), VLA_VENV (default .venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
venv="${VLA_VENV:-$root/.venv}"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[setup] error:\033[0m %s\n' "$*" >&2; exit 1; }

command -v "$python" >/dev/null || die "no '$python' found; install Python 3.10-3.13 or set PYTHON=/path/to/python3"
"$python" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)' \
  || die "$("$python" -V 2>&1) is unsupported: ROS 2 Jazzy wheels exist for Python 3.10-3.13"
[ "$(uname -m)" = x86_64 ] || say "warning: ROS 2 wheels are published for x86_64 only; on $(uname -m) source a ROS 2 Jazzy install first"

if [ "${ROS_DISTRO:-}" = jazzy ]; then
  mode=system-ros
  venv_flags=(--system-site-packages)
  say "ROS 2 Jazzy is sourced ($AMENT_PREFIX_PATH): using it instead of the wheels"
elif [ -n "${ROS_DISTRO:-}" ]; then
  die "ROS_DISTRO=$ROS_DISTRO is sourced but this workspace targets jazzy; open a clean shell"
else
  mode=wheels
  venv_flags=()
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv ($("$python" -V 2>&1), $mode)"
  "$python" -m venv "${venv_flags[@]}" "$venv"
fi

# The stamp records what was installed; pip runs only when the pins or the mode change.
stamp="$venv/.vla-requirements.sha256"
want="$( (cat requirements.txt; echo "$mode") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  reqs="$(mktemp)"
  trap 'rm -f "$reqs"' EXIT
  if [ "$mode" = system-ros ]; then grep -v '^ros-jazzy-' requirements.txt >"$reqs"; else cp requirements.txt "$reqs"; fi
  say "installing pinned dependencies (about a minute on a fresh venv)"
  # (the filter drops pip's warnings about this machine's empty local indexes, nothing else)
  if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs" 2>&1 \
    | { grep -v 'is ignored: it is neither a file nor a directory' || true; }; then
    die "pip install failed (see above)"
  fi
  echo "$want" >"$stamp"
else
  say "dependencies up to date ($venv)"
fi

# shellcheck source=scripts/env.sh
VLA_SKIP_INSTALL_SETUP=1 source "$root/scripts/env.sh"
say "building the workspace (colcon build --symlink-install)"
colcon build --symlink-install --event-handlers console_cohesion- summary+ status- \
  --build-base "$root/build" --install-base "$root/install" --base-paths "$root/src"
say "done. Use it with:  source scripts/env.sh"
