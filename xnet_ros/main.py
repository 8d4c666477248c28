"""The `xnet_node` executable: run the node until SIGINT/SIGTERM, then stop in order, exit 0.

    ros2 run xnet_ros xnet_node [--ros-args ...]

Signals. A terminal's Ctrl-C reaches every process of the group and `ros2 launch` forwards
another SIGINT (then SIGTERM after 5 s), so the node must survive any number of them at any
moment. rclpy's own handlers are not installed (they shut the context down under the node's
feet); instead:

* while importing rclpy, torch, timm and the node (before anything exists to clean up) the
  first signal ends the process at once (exit code 0): nothing is raised, because the signal
  may be handled inside a C++ extension's initialisation (torch's `_c10d_init`), which cannot
  unwind a Python exception (std::terminate);
* while starting (`rclpy.init`, building the node, and, with the `autostart` parameter,
  `node.autostart()`: configure, which loads the model, and activate) the first signal raises
  `_Interrupted`, which unwinds the start-up; the partly built node is then torn down like a
  running one. Inside an import (a backend's, e.g. onnxruntime) it is raised once the import
  has finished (the handler runs again every 50 ms until then);
* while running, the first signal only sets a flag: the spin loop (which waits at most 0.1 s)
  sees it and leaves;
* teardown: lifecycle `shutdown` (the frame in progress finishes, the inference thread is
  joined, publishers are released), `destroy_node`, `rclpy` shutdown, then a final log line
  that says every thread the node started has ended;
* every later signal is ignored; when `main` returns both signals stay ignored, so nothing
  can interrupt the interpreter's exit. Exit code 0, no traceback.

An external shutdown of the context (another thread calling `rclpy.shutdown`) also ends the
node with 0. A Python that cannot import rclpy or the node gets an explanation of why
(`xnet_ros.ros_check`) and exit code 1.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

SPIN_PERIOD_S = 0.1  # longest wait before the spin loop notices a signal
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PUBLICATION_MODE_ENV = "RMW_FASTRTPS_PUBLICATION_MODE"
RETRY_S = 0.05  # how often a signal held back by an import is handled again
_IMPORT_MODULES = ("importlib._bootstrap", "importlib._bootstrap_external")


def spin_once(executor: Any, timeout_sec: float = SPIN_PERIOD_S) -> bool:
    """`executor.spin_once`, except that an entity destroyed between the wait and the take
    (a lifecycle transition destroying a subscription whose QoS event was ready) is skipped:
    rclpy catches `InvalidHandle` there for subscriptions, timers and services but not for
    waitables such as QoS event handlers (`Executor._take_waitable` calls their `take_data`),
    and the exception would otherwise end the spin loop and the node. False when that
    happened; the same error raised anywhere else is raised."""
    try:
        executor.spin_once(timeout_sec=timeout_sec)
    except Exception as exc:
        if not _destroyed_while_taken(exc):
            raise
        return False
    return True


def _destroyed_while_taken(exc: BaseException) -> bool:
    """rclpy's InvalidHandle, raised while the executor took a waitable's data."""
    if type(exc).__name__ != "InvalidHandle":
        return False
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "_take_waitable" or (
                code.co_name == "take_data" and "rclpy" in Path(code.co_filename).parts):
            return True
        tb = tb.tb_next
    return False


def prefer_async_publication(environ: MutableMapping[str, str] = os.environ) -> str:
    """Fast DDS sends from its own thread (ASYNCHRONOUS) unless the user chose a mode; the
    mode in effect. Read by rmw_fastrtps when rclpy.init creates the participant, so called
    before it. rmw_fastrtps publishes synchronously by default (Kilted, measured here):
    `publish` returns after the message went into every reader's shared memory, ~2 ms more
    per 8.3 MB on the thread that builds the next frame. Asynchronously it returns once the
    message is in the writer's history (our buffer is free then), and subscribers get it as
    soon (docs/benchmarks.md). Other middlewares ignore the variable."""
    return environ.setdefault(PUBLICATION_MODE_ENV, "ASYNCHRONOUS")


class _Interrupted(BaseException):
    """Raised by the signal handler into the start-up code (BaseException: no `except
    Exception` in the node or rclpy swallows it)."""


class _StopRequest:
    """SIGINT/SIGTERM -> an orderly stop, requested once; later signals are ignored."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""
        self._interruptible = False
        self._on_exit: Callable[[], None] | None = None
        self._retries: list[threading.Timer] = []

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def ignore_from_now_on(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.requested:
            self.requested = True
            self.reason = signal.Signals(signum).name
        if self._on_exit is not None:
            self._exit_now()
        if not self._interruptible:
            return
        if _importing(frame):
            self._deliver_again(signum)
            return
        self._interruptible = False
        raise _Interrupted(self.reason)

    def _deliver_again(self, signum: int) -> None:
        """Run this handler again in RETRY_S, by Python's own delivery (no real signal: no
        system call of the import is interrupted again). The import in progress may be in a
        C++ module's initialisation that checks for signals or calls back into Python
        (torch's `_c10d_init`): an exception raised there cannot unwind the C++
        (std::terminate, exit -6)."""
        retry = threading.Timer(RETRY_S, _thread.interrupt_main, (signum,))
        retry.daemon = True
        self._retries = [t for t in self._retries if t.is_alive()] + [retry]
        retry.start()

    def _exit_now(self) -> None:
        on_exit, self._on_exit = self._on_exit, None
        with contextlib.suppress(Exception):
            on_exit()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(0)

    @contextlib.contextmanager
    def exits_at_once(self, on_exit: Callable[[], None]) -> Iterator[None]:
        """A region with nothing to clean up yet (imports, before `rclpy.init`) that the
        first signal ends with the process itself: `on_exit()`, then exit code 0. Nothing
        is raised, so no import of a C++ extension is ever unwound half-way."""
        if self.requested:
            raise _Interrupted(self.reason)
        self._on_exit = on_exit
        try:
            yield
        finally:
            self._on_exit = None

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A region the first signal interrupts (raises `_Interrupted` in it, but never
        inside an import: after it) instead of only setting the flag; it raises at once if a
        stop was requested before."""
        if self.requested:
            raise _Interrupted(self.reason)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
            for retry in self._retries:
                retry.cancel()
                retry.join()


def _importing(frame: Any) -> bool:
    """True when `frame` runs inside an import (a frame of importlib's bootstrap below it)."""
    while frame is not None:
        if frame.f_globals.get("__name__") in _IMPORT_MODULES:
            return True
        frame = frame.f_back
    return False


def _own_bug(exc: ImportError) -> bool:
    """An ImportError inside this project's own modules (not the generated messages): a bug
    to show with its traceback, not an environment problem to explain."""
    name = getattr(exc, "name", None) or ""
    own = name.split(".")[0] in ("xnet_ros", "xnet_model") and "." in name
    return own and not name.startswith("xnet_ros.msg")


def _explain_import_error(exc: ImportError) -> str:
    try:
        from .ros_check import explain_import_error
    except ImportError:
        return f"xnet_node cannot start: {type(exc).__name__}: {exc}"
    try:
        return explain_import_error(exc)
    except Exception:  # a diagnosis bug must not hide the original error
        return f"xnet_node cannot start: {type(exc).__name__}: {exc}"


def _init_rclpy(rclpy: Any, args: list[str] | None) -> None:
    """rclpy.init without rclpy's signal handlers (Humble, Jazzy and Kilted all have the
    option; an rclpy without it gets ours installed over its own right after)."""
    try:
        from rclpy.signals import SignalHandlerOptions
    except ImportError:
        rclpy.init(args=args)
        return
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)


def _teardown(node: Any, rclpy: Any, context: Any) -> None:
    """Lifecycle shutdown + destroy_node (joins the inference thread), then rclpy shutdown.
    Every step is attempted even if an earlier one fails (e.g. a node interrupted while it
    was configuring cannot take the shutdown transition)."""
    if node is not None:
        with contextlib.suppress(Exception):
            if node.lifecycle_state not in ("finalized", "unknown"):
                node.trigger_shutdown()
        with contextlib.suppress(Exception):
            node.destroy_node()
    if rclpy is not None:  # context None: interrupted in or right after rclpy.init
        with contextlib.suppress(Exception):
            if context is None or context is rclpy.get_default_context():
                rclpy.try_shutdown()  # also replaces the default context: main() can run again
            else:  # someone shut it down and replaced it already
                context.try_shutdown()


def main(args: list[str] | None = None) -> int:
    """Entry point of `xnet_node` (console script and lib/xnet_ros/xnet_node); see above."""
    stop = _StopRequest()
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # signal handlers can only be set there (tests run main in a thread)
        stop.install()
    threads_before = set(threading.enumerate())
    rclpy = context = node = logger = None
    code = 0
    try:
        with stop.exits_at_once(lambda: _report_stopped(None, stop, threads_before)):
            try:
                import rclpy
                from rclpy.executors import SingleThreadedExecutor

                from .node import XnetNode
                from .pipeline import import_model_runtime

                import_model_runtime()
            except ImportError as exc:
                if _own_bug(exc):
                    traceback.print_exc()
                else:
                    print(_explain_import_error(exc), file=sys.stderr)
                return 1
        with stop.interruptible():
            from xnet_model.memory import limit_malloc_arenas, tune_malloc

            tune_malloc()
            limit_malloc_arenas()
            mode = prefer_async_publication()
            _init_rclpy(rclpy, args)
            context = rclpy.get_default_context()
            # two steps, so that a node interrupted in its constructor can still be torn down
            node = XnetNode.__new__(XnetNode)
            node.__init__()
            logger = node.get_logger()
            if rclpy.get_rmw_implementation_identifier().startswith("rmw_fastrtps"):
                logger.info(f"Fast DDS publication mode {mode} ({PUBLICATION_MODE_ENV})")
            if node.params.autostart:  # configure (loads the model) + activate
                node.autostart()
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
        while not stop.requested and context.ok():
            spin_once(executor)
    except _Interrupted:
        pass
    except Exception as exc:
        # errors caused by the context going away (external shutdown) end the node cleanly
        if context is not None and context.ok() and not stop.requested:
            traceback.print_exc()
            code = 1
        elif type(exc).__name__ != "ExternalShutdownException" and logger is not None:
            logger.debug(f"ignored while stopping: {type(exc).__name__}: {exc}")
    finally:
        _teardown(node, rclpy, context)
        if in_main_thread:
            stop.ignore_from_now_on()
    _report_stopped(logger, stop, threads_before)
    return code


def _report_stopped(logger: Any, stop: _StopRequest, threads_before: set) -> None:
    left = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    reason = stop.reason or "shutdown"
    message = (f"stopped ({reason}): all threads joined" if not left else
               f"stopped ({reason}): threads still running: {', '.join(left)}")
    if logger is None:
        print(f"xnet_node {message}", file=sys.stderr)
        return
    with contextlib.suppress(Exception):
        (logger.info if not left else logger.warning)(message)


if __name__ == "__main__":
    sys.exit(main())
