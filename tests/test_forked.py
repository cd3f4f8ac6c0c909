"""deface_ts.forked: a function in a forked child, its result or its error back in the caller."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from deface_ts.errors import PrivacyError
from deface_ts.forked import Forked


def test_result_comes_back_and_the_child_sees_the_callers_memory():
    data = np.arange(1_000_000)
    job = Forked(lambda: (os.getpid(), int(data.sum())))  # a closure: nothing is pickled on the way in
    pid, total = job.result()
    assert pid != os.getpid() and total == int(data.sum())
    assert job.result() == (pid, total)  # asked again: the same answer, no second child


def test_shared_memory_written_by_the_child_is_seen_by_the_caller():
    from deface_ts.forked import shared_array

    shared = shared_array((100,), np.int64)
    Forked(shared.__setitem__, slice(None), 7).result()
    assert np.all(shared == 7)


def test_the_childs_exception_is_raised_in_the_caller():
    def fails():
        raise PrivacyError("post-check: 12 body voxels remain")

    with pytest.raises(PrivacyError, match="12 body voxels remain"):
        Forked(fails).result()


def test_an_exception_that_cannot_travel_arrives_as_its_text():
    class Odd(Exception):
        def __init__(self, a, b):
            super().__init__(f"{a} and {b}")

    def fails():
        raise Odd("left", "right")

    with pytest.raises(RuntimeError, match="Odd: left and right"):
        Forked(fails).result()


def test_a_killed_child_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match=r"ended without a result \(exit code -9\)"):
        Forked(lambda: os.kill(os.getpid(), signal.SIGKILL)).result()  # the child kills itself (an OOM kill)


def test_leaving_the_block_early_stops_the_child():
    with Forked(time.sleep, 60) as job:
        process = job._process
        assert process.is_alive()
    assert not process.is_alive() and process.exitcode == -signal.SIGTERM
    with pytest.raises(RuntimeError, match="stopped before it answered"):
        job.result()


def test_shared_array_has_the_shape_and_type_asked_for():
    from deface_ts.forked import shared_array

    volume = shared_array((3, 4, 5), np.int16)
    assert volume.shape == (3, 4, 5) and volume.dtype == np.int16 and not volume.any()
    Forked(volume.__setitem__, (1, 2, 3), -1000).result()
    assert volume[1, 2, 3] == -1000 and np.count_nonzero(volume) == 1
