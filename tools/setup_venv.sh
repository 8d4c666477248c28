#!/usr/bin/env bash
# Build .venv from requirements.lock; reuse it when the lock has not changed (pip caches nothing here).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOCK=requirements.lock
STAMP=.venv/.lock.sha256
want=$(sha256sum "$LOCK" | cut -d' ' -f1)
if [[ -x .venv/bin/python && -f $STAMP && "$(cat "$STAMP")" == "$want" ]]; then
  echo "setup: .venv is up to date with $LOCK"
else
  echo "setup: building .venv from $LOCK (several GB of torch/CUDA wheels; a few minutes)"
  rm -rf .venv
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q --no-deps -r "$LOCK"
  .venv/bin/python -m pip check || true
  echo "$want" > "$STAMP"
fi
# The project itself, editable and without dependencies (they come from the lock).
if ! .venv/bin/python -c "import xnet_model, xnet_ros" 2>/dev/null \
   || [[ setup.py -nt .venv/.project.stamp ]]; then
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  touch .venv/.project.stamp
fi
