# Source this file (bash or zsh) to use the workspace: activates .venv, sets up the ROS 2 environment
# (the PyPI wheels or a sourced Jazzy install) and overlays install/. Puts every package's executables on PATH.
_vla_root="$(cd "$(dirname "${BASH_SOURCE[0]:-${(%):-%x}}")/.." && pwd)"
_vla_venv="${VLA_VENV:-$_vla_root/.venv}"
if [ ! -x "$_vla_venv/bin/python" ]; then
  echo "[env] no virtual environment at $_vla_venv: run scripts/setup.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
VIRTUAL_ENV_DISABLE_PROMPT=1 . "$_vla_venv/bin/activate"
if [ "${ROS_DISTRO:-}" != jazzy ]; then
  # ROS 2 from the wheels: set up what ros_wheels_bootstrapper would otherwise do by re-executing every
  # Python process, and register the venv in the ament index so get_package_share_directory works.
  _vla_libs="$_vla_venv/lib"
  for _d in "$_vla_venv"/lib/python3.*/site-packages/ros_*.libs; do [ -d "$_d" ] && _vla_libs="$_vla_libs:$_d"; done
  export LD_LIBRARY_PATH="$_vla_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
  case ":${AMENT_PREFIX_PATH:-}:" in *":$_vla_venv:"*) ;; *) export AMENT_PREFIX_PATH="$_vla_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;; esac
  export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
fi
# Camera images need no export: vla-up and the launch files give each process that publishes or subscribes
# images vla_perception's Fast DDS profile (a 16 MB shared-memory segment; src/vla_perception/README.md).
if [ -z "${VLA_SKIP_INSTALL_SETUP:-}" ] && [ -f "$_vla_root/install/local_setup.sh" ]; then
  _vla_u="$-"; set +u
  # shellcheck disable=SC1091
  COLCON_CURRENT_PREFIX="$_vla_root/install" . "$_vla_root/install/local_setup.sh"
  case "$_vla_u" in *u*) set -u ;; esac
  for _d in "$_vla_root"/install/*/lib/vla_*; do
    case ":$PATH:" in *":$_d:"*) ;; *) [ -d "$_d" ] && PATH="$_d:$PATH" ;; esac
  done
  export PATH
fi
unset _vla_libs _vla_u _d
