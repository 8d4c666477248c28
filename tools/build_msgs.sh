#!/usr/bin/env bash
# Build the package (its interfaces in msg/, the native post-processing kernels in src/) with
# plain cmake against the ROS 2 PyPI wheels in .venv: configure + build + install into build/
# and install/ (no colcon, no system ROS).
# Does nothing when the inputs are unchanged since the last successful build (hash stamp).
# Users with a ROS 2 distro build the package the normal way instead: `colcon build`.
#
# Env: XNET_MSGS_FORCE=1   rebuild even if the stamp matches
#      XNET_MSGS_JOBS=N    parallel jobs (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=$ROOT/.venv
BUILD=$ROOT/build
INSTALL=$ROOT/install
STAMP=$BUILD/.xnet_msgs.sha256
PY=$VENV/bin/python

if [[ ! -x $PY ]]; then
  echo "msgs: $PY not found; run 'make setup' first" >&2
  exit 1
fi

# One build at a time per checkout (several make targets may run concurrently).
if command -v flock >/dev/null; then
  exec 9>"${TMPDIR:-/tmp}/xnet_msgs.$(echo "$ROOT" | sha256sum | cut -c1-16).lock"
  flock 9
fi

# --- everything the build and install depend on ---
hash_inputs() {
  local f
  for f in msg/*.msg src/*.c CMakeLists.txt package.xml resource/entry_points.txt tools/build_msgs.sh \
           tools/pypi_ros_fixes.cmake \
           scripts/xnet_node .venv/.lock.sha256 $(find launch config -type f ! -name '*.pyc' \
           2>/dev/null | LC_ALL=C sort); do
    if [[ -f $f ]]; then echo "$f $(sha256sum < "$f")"; fi
  done
  echo "root $ROOT"
  echo "python $(readlink -f "$PY")"
}
want=$(hash_inputs | sha256sum | cut -d' ' -f1)
pyver=$("$PY" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')
probe=$INSTALL/lib/$pyver/site-packages/xnet_ros/msg/_inference_stats.py
native=$INSTALL/lib/libxnet_ros_postprocess.so

if [[ -z ${XNET_MSGS_FORCE:-} && -f $STAMP && "$(cat "$STAMP")" == "$want" && -f $probe && -f $native ]]; then
  echo "msgs: up to date (install/)"
  exit 0
fi

t0=$(date +%s%N)
# ament/rosidl find their CMake configs and ament index through AMENT_PREFIX_PATH and
# CMAKE_PREFIX_PATH = the venv prefix (the wheels put share/<pkg>/cmake, share/ament_index and
# lib/*.so directly under .venv).
export VIRTUAL_ENV=$VENV
export PATH=$VENV/bin:$PATH
export AMENT_PREFIX_PATH=$VENV
export CMAKE_PREFIX_PATH=$VENV
# never mix with a sourced ROS distro
unset PYTHONPATH ROS_DISTRO COLCON_PREFIX_PATH ROS_VERSION || true

# A cache from another checkout location cannot be reused.
if [[ -f $BUILD/CMakeCache.txt ]] \
   && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$ROOT" "$BUILD/CMakeCache.txt"; then
  rm -rf "$BUILD"
fi

configure() {
  local gen=()
  if [[ ! -f $BUILD/CMakeCache.txt ]] && command -v ninja >/dev/null; then gen=(-G Ninja); fi
  cmake -S "$ROOT" -B "$BUILD" "${gen[@]}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$INSTALL" \
    -DCMAKE_PROJECT_INCLUDE="$ROOT/tools/pypi_ros_fixes.cmake" \
    -DPython3_EXECUTABLE="$PY" \
    -DXNET_INSTALL_PYTHON_SOURCES=OFF \
    -DBUILD_TESTING=OFF
}

echo "msgs: building msg/ -> install/ (cmake + rosidl against the ROS 2 wheels in .venv)"
log=$BUILD/xnet_msgs.log
mkdir -p "$BUILD"
if ! configure >"$log" 2>&1; then
  echo "msgs: configure failed; retrying with a clean build/"
  rm -rf "$BUILD" && mkdir -p "$BUILD"
  if ! configure >"$log" 2>&1; then
    cat "$log" >&2
    echo "msgs: cmake configure failed" >&2
    exit 1
  fi
fi
if ! cmake --build "$BUILD" -j "${XNET_MSGS_JOBS:-$(nproc)}" >>"$log" 2>&1; then
  tail -n 80 "$log" >&2
  echo "msgs: build failed (log: $log)" >&2
  exit 1
fi
if ! cmake --install "$BUILD" >>"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "msgs: install failed (log: $log)" >&2
  exit 1
fi
for f in "$probe" "$native"; do
  if [[ ! -f $f ]]; then
    echo "msgs: build finished but $f is missing (log: $log)" >&2
    exit 1
  fi
done
echo "$want" > "$STAMP"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "msgs: built in $((ms / 1000)).$(( (ms % 1000) / 100 )) s -> install/ (log: build/xnet_msgs.log)"
