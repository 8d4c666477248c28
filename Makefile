# xnet_ros — one-command setup, tests, demo. Everything runs inside .venv (built from the lock).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
ROS_ENV := source tools/ros_env.sh &&

.PHONY: setup msgs lint test test-fast demo bench lock clean

setup:                 ## build/reuse .venv from requirements.lock, install the project editable
	@bash tools/setup_venv.sh

msgs: setup            ## build msg/ (rosidl, ament_cmake) into install/ with the PyPI ROS wheels
	@bash tools/build_msgs.sh

lint: setup
	$(VENV)/bin/ruff check .

test: setup msgs lint  ## the whole suite (CI runs this)
	$(ROS_ENV) $(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup msgs
	$(ROS_ENV) $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: setup msgs       ## run the node on the synthetic camera, record a bag, write previews
	$(ROS_ENV) $(PY) -m xnet_ros.demo --out demo_out $(DEMO_ARGS)

bench: setup msgs
	$(ROS_ENV) $(PY) -m benchmarks.run_all --append docs/benchmarks.md $(BENCH_ARGS)

lock:                  ## re-resolve requirements.in into requirements.lock (needs network)
	rm -rf /tmp/xnet-lock && python3 -m venv /tmp/xnet-lock
	/tmp/xnet-lock/bin/pip install -q --upgrade pip && /tmp/xnet-lock/bin/pip install -r requirements.in
	/tmp/xnet-lock/bin/python tools/freeze_lock.py > requirements.lock

clean:
	rm -rf build install log demo_out .pytest_cache
