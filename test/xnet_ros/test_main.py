"""xnet_ros.main without ROS: the stop request (signal logic) and the import-error path.
The real signal tests with subprocesses are in test_shutdown.py."""

from __future__ import annotations

import operator
import signal
import subprocess
import sys
import threading
import time

import pytest

from xnet_ros.main import (
    PUBLICATION_MODE_ENV,
    STOP_SIGNALS,
    _Interrupted,
    _StopRequest,
    prefer_async_publication,
    spin_once,
)


class InvalidHandle(Exception):
    """Stands in for rclpy's (matched by name: main.py imports nothing from rclpy)."""


class FakeExecutor:
    """Raises `error` from a function of the given name, as rclpy's executor would."""

    def __init__(self, error: Exception | None, where: str = "_take_waitable"):
        self.error, self.where, self.calls = error, where, []

    def spin_once(self, timeout_sec):
        self.calls.append(timeout_sec)
        if self.error is not None:
            raise_from = {"_take_waitable": _take_waitable, "callback": callback}[self.where]
            raise_from(self.error)


def _take_waitable(error):
    raise error


def callback(error):
    raise error


def test_spin_once_skips_an_entity_destroyed_between_wait_and_take():
    executor = FakeExecutor(InvalidHandle("destruction was requested"))
    assert spin_once(executor, timeout_sec=0.25) is False
    assert executor.calls == [0.25]
    assert spin_once(FakeExecutor(None)) is True


@pytest.mark.ros
def test_spin_once_survives_a_real_subscription_destroyed_between_wait_and_take(tmp_path,
                                                                               monkeypatch):
    """The real race, forced: a subscription's QoS event (an incompatible publisher) is ready,
    and the subscription is destroyed just before the executor takes the event."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed")
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path))
    context = Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("xnet_spin_race", context=context)
        sub = node.create_subscription(String, "spin_race", lambda msg: None,
                                       QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        node.create_publisher(String, "spin_race",
                              QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        taken = []

        def destroy_then_take(handler):
            def take_data():
                taken.append(handler)
                node.destroy_subscription(sub)
                return type(handler).take_data(handler)
            return take_data

        assert sub.event_handlers, "rclpy gave the subscription no QoS event handlers"
        for handler in sub.event_handlers:
            handler.take_data = destroy_then_take(handler)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        results = []
        deadline = time.monotonic() + 15.0  # discovery of the incompatible publisher
        while not taken and time.monotonic() < deadline:
            results.append(spin_once(executor, timeout_sec=0.1))
        assert taken, "the incompatible-QoS event never came"
        assert results[-1] is False and results.count(False) == 1
        assert sub not in node.subscriptions
        assert spin_once(executor, timeout_sec=0.05) is True  # the loop goes on
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize("error, where", [
    (InvalidHandle("a callback used a destroyed publisher"), "callback"),
    (ValueError("a callback's own bug"), "callback"),
    (ValueError("not the race"), "_take_waitable"),
])
def test_spin_once_raises_every_other_error(error, where):
    with pytest.raises(type(error)):
        spin_once(FakeExecutor(error, where))


def test_fast_dds_publishes_asynchronously_unless_the_user_chose():
    env: dict[str, str] = {}
    assert prefer_async_publication(env) == "ASYNCHRONOUS"
    assert env == {PUBLICATION_MODE_ENV: "ASYNCHRONOUS"}
    chosen = {PUBLICATION_MODE_ENV: "SYNCHRONOUS"}
    assert prefer_async_publication(chosen) == "SYNCHRONOUS"
    assert chosen == {PUBLICATION_MODE_ENV: "SYNCHRONOUS"}


def test_first_signal_interrupts_the_startup_region_once():
    stop = _StopRequest()
    with pytest.raises(_Interrupted), stop.interruptible():
        stop._handle(signal.SIGTERM, None)
        pytest.fail("not interrupted")
    assert stop.requested and stop.reason == "SIGTERM"
    stop._handle(signal.SIGINT, None)  # later signals: ignored, no exception, reason kept
    assert stop.reason == "SIGTERM"


def test_signal_while_running_only_sets_the_flag():
    stop = _StopRequest()
    with stop.interruptible():
        pass
    stop._handle(signal.SIGINT, None)  # outside the region: no exception
    assert stop.requested and stop.reason == "SIGINT"


def test_signal_before_the_region_interrupts_on_entry():
    stop = _StopRequest()
    stop._handle(signal.SIGINT, None)
    with pytest.raises(_Interrupted), stop.interruptible():
        pytest.fail("the region must not run")


_SIGNALLED_MODULE = """
import os, signal, time
os.kill(os.getpid(), signal.SIGTERM)
for _ in range(20):  # the handler runs here, inside the import
    time.sleep(0.01)
finished = True
"""


def test_a_signal_during_an_import_interrupts_after_the_import(tmp_path, monkeypatch):
    """A C++ extension's initialisation cannot unwind an exception raised by the handler
    (CI: torch's `_c10d_init`, std::terminate): the import completes, then the region is
    interrupted, and the retry thread is gone when the region is left."""
    (tmp_path / "signalled_module.py").write_text(_SIGNALLED_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "signalled_module", raising=False)
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    threads = set(threading.enumerate())
    stop, imported = _StopRequest(), None
    stop.install()
    try:
        with pytest.raises(_Interrupted), stop.interruptible():
            import signalled_module  # noqa: F401
            imported = time.monotonic()
            while time.monotonic() < imported + 5:
                time.sleep(0.01)
            pytest.fail("not interrupted after the import")
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert imported is not None, "interrupted inside the import"
    waited = time.monotonic() - imported
    assert sys.modules["signalled_module"].finished
    assert stop.reason == "SIGTERM"
    assert waited < 1.0
    assert set(threading.enumerate()) <= threads


_SIGNAL_IN_TORCH_INIT = """
import ctypes, functools, operator, signal, sys, threading, time
from xnet_ros.main import _Interrupted, _StopRequest

libc = ctypes.CDLL(None)
mask = ctypes.create_string_buffer(128)  # a sigset_t holding SIGTERM
libc.sigemptyset(mask)
libc.sigaddset(mask, signal.SIGTERM)
SIG_BLOCK, SIG_UNBLOCK = 0, 1


class SignalDuringC10dInit:
    def find_spec(self, name, path=None, target=None):
        if name == "torch.distributed":
            import torch._C as C
            if not hasattr(C, "_c10d_init"):
                print("no _c10d_init")
                sys.exit(0)
            init = C._c10d_init

            def signalled_init():  # SIGTERM pending, then unblocked and init() run from C
                libc.pthread_sigmask(SIG_BLOCK, mask, None)
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
                unblock = functools.partial(libc.pthread_sigmask, SIG_UNBLOCK, mask, None)
                return list(map(operator.call, [unblock, init]))[1]  # no bytecode between

            C._c10d_init = signalled_init


sys.meta_path.insert(0, SignalDuringC10dInit())
stop = _StopRequest()
stop.install()
region = (stop.interruptible() if sys.argv[1] == "interruptible" else
          stop.exits_at_once(lambda: print("exit", stop.reason, flush=True)))
try:
    with region:
        import torch  # noqa: F401
        print("imported", flush=True)
        for _ in range(500):
            time.sleep(0.01)
except _Interrupted:
    print("interrupted", stop.reason)
"""


@pytest.mark.slow
@pytest.mark.parametrize("region, printed", [
    ("interruptible", ["imported", "interrupted", "SIGTERM"]),  # a backend's import
    ("exits_at_once", ["exit", "SIGTERM"]),  # main()'s imports
])
def test_a_signal_inside_torchs_module_initialisation_does_not_abort(region, printed):
    """CI's failure, reproduced: SIGTERM handled inside `torch._C._c10d_init` (C++, run
    while `import torch` imports torch.distributed; it calls back into importlib's Python,
    where the handler runs). Raising there aborted the process (std::terminate, exit -6)."""
    pytest.importorskip("torch")
    if not hasattr(operator, "call"):
        pytest.skip("operator.call needs Python 3.11")
    proc = subprocess.run([sys.executable, "-c", _SIGNAL_IN_TORCH_INIT, region],
                          capture_output=True, text=True, timeout=120)
    if "no _c10d_init" in proc.stdout:
        pytest.skip("this torch has no torch._C._c10d_init to signal inside")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == printed, proc.stderr[-3000:]


_EXIT_AT_ONCE = """
import os, signal, sys
from xnet_ros.main import _StopRequest

stop = _StopRequest()
stop.install()
with stop.exits_at_once(lambda: print("stopped", stop.reason)):
    os.kill(os.getpid(), signal.SIGINT)
    print("after the signal")
print("after the region")
"""


def test_a_signal_before_anything_exists_ends_the_process_at_once():
    proc = subprocess.run([sys.executable, "-c", _EXIT_AT_ONCE], capture_output=True,
                          text=True, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "stopped SIGINT\n", "")


_BLOCK_RCLPY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "rclpy" or name.startswith("rclpy."):
            raise ModuleNotFoundError("No module named 'rclpy'", name="rclpy")
sys.meta_path.insert(0, Block())
sys.modules.pop("rclpy", None)
from xnet_ros.main import main
sys.exit(main([]))
"""


def test_missing_rclpy_is_explained_without_a_traceback():
    proc = subprocess.run([sys.executable, "-c", _BLOCK_RCLPY], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "rclpy" in proc.stderr, proc.stderr


@pytest.mark.parametrize("name, bug", [
    ("xnet_ros.ros_messages", True), ("xnet_model.runtime", True), ("xnet_ros.msg", False),
    ("xnet_ros.msg._class_table", False), ("xnet_model", False), ("rclpy", False),
    ("torch", False), (None, False)])
def test_import_errors_in_our_own_modules_are_bugs_not_environment(name, bug):
    """`cannot import name 'x' from 'xnet_ros.y'` gets its traceback; a missing package or
    unbuilt messages get the ros_check explanation."""
    from xnet_ros.main import _own_bug

    assert _own_bug(ImportError("x", name=name)) is bug
