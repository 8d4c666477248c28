#!/usr/bin/env bash
# Build .venv from a lock; reuse it while the lock is unchanged (pip caches nothing here).
#
#   tools/setup_venv.sh                 `make setup`: requirements.lock (torch, timm, the ROS 2
#                                       Kilted wheels, ...) with CPython 3.11, the only Python the
#                                       wheels' compiled parts (rclpy, typesupports) are built for
#   tools/setup_venv.sh --model         `make setup-model`: requirements-model.lock, the ROS-free
#                                       set (xnet train/eval/export/bench, xnet bag), CPython >= 3.10
#   tools/setup_venv.sh --which-python  print the CPython 3.11 `make setup` would use
#
# CPython 3.11: $PYTHON, else python3.11 on PATH, else python3 if it is 3.11, else a uv-managed
# 3.11 (`uv python find 3.11`; `uv python install 3.11` when uv has none). With none, it stops
# before downloading anything and says how to get one. --model: $PYTHON, else python3 when it is
# >= 3.10, else that 3.11 search. A full .venv also serves --model (it is a superset).
#
# Env: PYTHON=...               the interpreter to use
#      XNET_SETUP_DRY_RUN=1     print what would be done (interpreter, reuse or build), change nothing
#      XNET_SETUP_MIN_FREE_GB   free disk needed before a build (default 7; .venv takes ~6 GB)
set -euo pipefail
cd "$(dirname "$0")/.."

ROS_PYTHON=3.11   # the ABI of the ROS 2 Kilted PyPI wheels (cpython-311 extensions)
MIN_MODEL_PYTHON=3.10
VENV=.venv
LOCK=requirements.lock
MODEL_LOCK=requirements-model.lock
MODEL_IN=requirements-model.in
STAMP=$VENV/.lock.sha256              # full set (tools/build_msgs.sh hashes it too)
MODEL_STAMP=$VENV/.model-lock.sha256  # ROS-free set only
DRY=${XNET_SETUP_DRY_RUN:-}

mode=full
case "${1:-}" in
  "") ;;
  --model) mode=model ;;
  --which-python) mode=which ;;
  *) echo "usage: $0 [--model | --which-python]" >&2; exit 2 ;;
esac

say() { echo "setup: $*"; }
die() { echo "setup: $*" >&2; exit 1; }

# "<implementation> <major.minor> <1 if venv+ensurepip are there> <sys.executable>" (a pyenv
# shim resolves to the real interpreter), or nothing if it does not run
probe() {
  "$1" -c 'import sys, importlib.util as u
ok = all(u.find_spec(m) is not None for m in ("venv", "ensurepip"))
print(sys.implementation.name, "%d.%d" % sys.version_info[:2], int(ok), sys.executable)' \
    2>/dev/null | tail -n 1
}
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" == "$2" ]]; }
stamp_is() { [[ -f $1 && "$(cat "$1")" == "$2" ]]; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

found="" found_ver=""   # the interpreter a search settled on
tried=()                # what the search looked at (for the error message)
no_venv=""              # a fitting CPython without the venv module (Debian: pythonX.Y-venv)

# accept CMD WANT (X.Y, or "min" for >= MIN_MODEL_PYTHON): sets found/found_ver when CMD fits
accept() {
  local cmd=$1 want=$2 path impl ver venv_ok exe
  if ! path=$(command -v "$cmd" 2>/dev/null); then tried+=("$cmd: not found"); return 1; fi
  read -r impl ver venv_ok exe <<<"$(probe "$path")"
  if [[ ${impl:-} != cpython ]]; then tried+=("$cmd: does not run, or not CPython"); return 1; fi
  if [[ $want == min ]] && ! version_ge "$ver" "$MIN_MODEL_PYTHON" \
     || [[ $want != min && $ver != "$want" ]]; then
    tried+=("$cmd: CPython $ver"); return 1
  fi
  if [[ $venv_ok != 1 ]]; then
    tried+=("$cmd: CPython $ver without the venv module")
    no_venv="sudo apt install python$ver-venv   ($path has no venv/ensurepip)"
    return 1
  fi
  found=${exe:-$path} found_ver=$ver
}

find_ros_python() {
  local uvpy
  if [[ -n ${PYTHON:-} ]]; then
    accept "$PYTHON" "$ROS_PYTHON"; return   # an explicit PYTHON that does not fit is an error
  fi
  accept python3.11 "$ROS_PYTHON" && return 0
  accept python3 "$ROS_PYTHON" && return 0
  if ! command -v uv >/dev/null; then tried+=("uv: not installed"); return 1; fi
  if uvpy=$(uv python find "$ROS_PYTHON" 2>/dev/null) && accept "$uvpy" "$ROS_PYTHON"; then
    return 0
  fi
  if [[ -n $DRY ]]; then
    say "[dry run] would run: uv python install $ROS_PYTHON"
    tried+=("uv: has no $ROS_PYTHON yet (dry run: not installed)")
    return 1
  fi
  say "no CPython $ROS_PYTHON on PATH; installing one with uv (about 40 MB)"
  if uv python install "$ROS_PYTHON" && uvpy=$(uv python find "$ROS_PYTHON") \
     && accept "$uvpy" "$ROS_PYTHON"; then
    return 0
  fi
  tried+=("uv python install $ROS_PYTHON: failed")
  return 1
}

find_model_python() {
  if [[ -n ${PYTHON:-} ]]; then accept "$PYTHON" min; return; fi
  accept python3 min || find_ros_python
}

no_python_message() {
  local looked="" item
  for item in "${tried[@]}"; do
    [[ "; $looked; " == *"; $item; "* ]] || looked+="${looked:+; }$item"
  done
  echo "setup: no usable $1 found (looked at: $looked)." >&2
  if [[ -n $no_venv ]]; then echo "  $no_venv" >&2; fi
  if [[ $mode == model ]]; then
    echo "  \`make setup-model\` needs a CPython >= 3.10; 3.11 also runs the ROS parts. Get one:" >&2
  else
    cat >&2 <<'MSG'
  The ROS 2 Kilted wheels `make setup` installs (rclpy, the message typesupports) are compiled
  for CPython 3.11 only. Get a CPython 3.11, then run `make setup` again:
MSG
  fi
  cat >&2 <<'MSG'
    Debian 12:           sudo apt install python3 python3-venv        (its python3 is 3.11)
    Ubuntu 22.04/24.04:  sudo add-apt-repository ppa:deadsnakes/ppa
                         sudo apt install python3.11 python3.11-venv
    uv (any Linux):      curl -LsSf https://astral.sh/uv/install.sh | sh
                         (`make setup` then runs `uv python install 3.11` itself)
    pyenv:               pyenv install 3.11 && PYTHON=$(pyenv prefix 3.11)/bin/python make setup
MSG
  if [[ $mode != model ]]; then
    cat >&2 <<'MSG'
  Without 3.11, `make setup-model` installs the ROS-free parts (xnet train/eval/export/bench,
  `xnet bag`) with any CPython >= 3.10.
MSG
  fi
  cat >&2 <<'MSG'
  On a robot with a ROS 2 distro installed (Humble, Jazzy, Kilted), .venv is not needed: build
  the package with `colcon build` and the distro's Python (README: "With a ROS 2 installation").
MSG
  exit 1
}

if [[ $mode == which ]]; then
  find_ros_python >&2 || no_python_message "CPython $ROS_PYTHON"
  echo "$found"
  exit 0
fi

# --- what .venv holds now ---
v_ver=""
if [[ -x $VENV/bin/python ]]; then read -r _ v_ver _ <<<"$(probe "$VENV/bin/python")"; fi
want_full=$(sha "$LOCK")
has_full=""
if [[ $v_ver == "$ROS_PYTHON" ]] && stamp_is "$STAMP" "$want_full"; then has_full=1; fi

# --- reuse it, or plan a build (py, install args, stamp file + content, what, why) ---
build=""
if [[ $mode == full ]]; then
  if [[ -n $has_full ]]; then
    say "$VENV is up to date with $LOCK"
  else
    if [[ -z $v_ver ]]; then why="there is no usable $VENV"
    elif [[ $v_ver != "$ROS_PYTHON" ]]; then
      why="$VENV has CPython $v_ver; the ROS 2 wheels need $ROS_PYTHON"
    elif [[ -f $MODEL_STAMP ]]; then why="$VENV has only the ROS-free set (make setup-model)"
    else why="$LOCK changed since $VENV was built"
    fi
    find_ros_python || no_python_message "CPython $ROS_PYTHON"
    build=1 install=(--no-deps -r "$LOCK") stamp=$STAMP want=$want_full
    what="$LOCK (torch, timm, ROS 2 Kilted wheels: ~3 GB download, ~6 GB on disk, ~5 min)"
  fi
else
  covered=$(sed -n 's/^# python: //p' "$MODEL_LOCK" 2>/dev/null || true)
  # the lock when it has pins for Python $1, else the top-level requirements resolved by pip
  model_want() {
    if [[ " $covered " == *" $1 "* ]]; then echo "$(sha "$MODEL_LOCK")"
    else echo "unpinned $(sha "$MODEL_IN")"; fi
  }
  if [[ -n ${PYTHON:-} ]]; then find_model_python || no_python_message "CPython >= 3.10"; fi
  if [[ -n $has_full && ( -z $found_ver || $found_ver == "$v_ver" ) ]]; then
    say "$VENV has the full set (ROS included), a superset of the ROS-free one"
  elif [[ -n $v_ver && ( -z $found_ver || $found_ver == "$v_ver" ) ]] \
       && stamp_is "$MODEL_STAMP" "$(model_want "$v_ver")"; then
    say "$VENV is up to date with the ROS-free set (CPython $v_ver)"
  else
    if [[ -z $found ]]; then find_model_python || no_python_message "CPython >= 3.10"; fi
    build=1 stamp=$MODEL_STAMP want=$(model_want "$found_ver")
    why="the ROS-free set for CPython $found_ver is not installed in $VENV"
    if [[ $want != unpinned* ]]; then
      install=(--no-deps -r "$MODEL_LOCK")
      what="$MODEL_LOCK (torch, timm, rosbags; no ROS: ~3 GB download, ~6 GB on disk, ~6 min)"
    else
      install=(-r "$MODEL_IN")
      what="$MODEL_IN resolved by pip ($MODEL_LOCK has pins for Python $covered only)"
    fi
  fi
fi

if [[ -n $build ]]; then
  if [[ -n $DRY ]]; then
    say "[dry run] $why"
    say "[dry run] would build $VENV with $found (CPython $found_ver) from $what"
    exit 0
  fi
  free_kb=$(df -Pk . | awk 'NR == 2 {print $4}')
  if [[ -d $VENV ]]; then free_kb=$((free_kb + $(du -sk "$VENV" | cut -f1))); fi  # replaced
  need_gb=${XNET_SETUP_MIN_FREE_GB:-7}
  if (( free_kb < need_gb * 1024 * 1024 )); then
    die "only $((free_kb / 1024 / 1024)) GB free here; $VENV needs about 6 GB plus room for" \
        "pip's temporary files (XNET_SETUP_MIN_FREE_GB=N overrides this check)"
  fi
  say "$why"
  say "building $VENV with $found (CPython $found_ver) from $what"
  rm -rf "$VENV"
  "$found" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "${install[@]}"
  "$VENV/bin/python" -m pip check || true
  echo "$want" > "$stamp"
fi

if [[ -n $DRY ]]; then say "[dry run] nothing to build"; exit 0; fi
# The project itself, editable and without dependencies (they come from the lock).
if ! "$VENV/bin/python" -c "import xnet_model, xnet_ros" >/dev/null 2>&1 \
   || [[ setup.py -nt $VENV/.project.stamp ]]; then
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e .
  touch "$VENV/.project.stamp"
fi
