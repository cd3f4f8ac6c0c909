"""Run one function in a forked child process beside the caller: the second core of a 2-core machine.

Threads do not help the stages that overlap here: pydicom's parsing and writing hold the GIL. A child made
by fork shares the caller's memory copy-on-write, so the CT, the plan and the configuration are not pickled;
only the result (or the exception) travels back, pickled through a pipe. Where fork is not available the
function runs in the caller when its result is asked for, with the same result.

Fork only while no other thread of this process is running: a child inherits locks held by other threads.
"""

from __future__ import annotations

import mmap
import multiprocessing
import pickle
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Generic, TypeVar

import numpy as np

T = TypeVar("T")

#: Native libraries with threads or GL contexts of their own: once one has run, a fork copies them half made.
NATIVE = ("cv2", "mediapipe", "dlib", "torch", "vtkmodules.vtkRenderingOpenGL2", "tensorflow")


def fork_is_safe() -> bool:
    """No other thread runs and none of the ``NATIVE`` libraries has been loaded in this process."""
    return threading.active_count() == 1 and not any(name in sys.modules for name in NATIVE)


def shared_array(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zeroed array in memory that children forked after this call share with the caller: what a child
    writes there, the caller reads (nothing pickled)."""
    dtype = np.dtype(dtype)
    size = max(int(np.prod(shape)) * dtype.itemsize, 1)
    return np.frombuffer(mmap.mmap(-1, size), dtype, count=int(np.prod(shape))).reshape(shape)


class Forked(Generic[T]):
    """``fn(*args)`` started in a forked child now; :meth:`result` waits for it and returns it or raises its error.

    Used as a context manager, a child still running when the block ends (the caller failed) is stopped.
    With ``fork=False`` (or where fork is not available) ``fn`` runs in the caller when its result is asked for.
    """

    def __init__(self, fn: Callable[..., T], *args: Any, fork: bool = True) -> None:
        self._call = (fn, args)
        self._process: Any = None
        self._done: tuple[str, Any] | None = None
        if not fork or "fork" not in multiprocessing.get_all_start_methods():
            return
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        # Not daemonic, so that a child may start workers of its own (the verification's dlib worker); every
        # Forked is waited for or stopped by its owner (a context manager, or stop()).
        self._process = context.Process(target=_child, args=(send, fn, args), daemon=False,
                                        name=f"deface-ts {getattr(fn, '__name__', 'worker')}")
        self._process.start()
        send.close()

    def result(self) -> T:
        if self._done is None:
            self._done = self._wait() if self._process is not None else _outcome(*self._call)
        status, value = self._done
        if status == "error":
            raise value
        return value

    def _wait(self) -> tuple[str, Any]:
        try:
            outcome = self._receive.recv()
        except EOFError:  # killed (OOM, a signal) before it could answer
            self._process.join()
            name = getattr(self._call[0], "__name__", "worker")
            return "error", RuntimeError(f"the forked {name} process ended without a result "
                                         f"(exit code {self._process.exitcode})")
        finally:
            self._receive.close()
        self._process.join()
        return outcome

    def __enter__(self) -> Forked[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the child if it has not answered yet (its result is no longer wanted)."""
        if self._process is not None and self._done is None:
            self._process.terminate()
            self._process.join()
            self._receive.close()
            self._done = "error", RuntimeError("stopped before it answered")


def _outcome(fn: Callable[..., Any], args: tuple) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:
        return "error", exc


def _child(send: Connection, fn: Callable[..., Any], args: tuple) -> None:
    status, value = _outcome(fn, args)
    if status == "error":
        try:  # an exception the caller could not unpickle (a constructor with other arguments) goes as its text
            pickle.loads(pickle.dumps(value))
        except Exception:
            value = RuntimeError(f"{value.__class__.__name__}: {value}")
    send.send((status, value))
    send.close()
