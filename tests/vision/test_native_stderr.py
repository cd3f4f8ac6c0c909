"""Native libraries' start-up chatter on file descriptor 2 is dropped; every other line still gets through."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

WRITER = textwrap.dedent("""
    import os, sys
    from deface_ts.vision.native_stderr import drop_native_noise
    print("before", file=sys.stderr, flush=True)
    with drop_native_noise():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
        os.write(2, b"W0000 00:00:1796511724.142011    8374 inference_feedback_manager.cc:114] Feedback...\\n")
        os.write(2, b"E1205 native failure that matters\\n")
        print("a warning of ours", file=sys.stderr)
    print("after", file=sys.stderr, flush=True)
""")


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_known_chatter_dropped_other_lines_kept_in_order():
    done = _run(WRITER)
    assert done.returncode == 0
    assert done.stderr.splitlines() == ["before", "E1205 native failure that matters", "a warning of ours", "after"]


def test_mediapipe_detector_is_quiet():
    pytest.importorskip("mediapipe")
    done = _run("import numpy as np\nfrom deface_ts.vision.faces import _detect_mediapipe\n"
                "print(_detect_mediapipe(np.zeros((200, 160, 3), np.uint8)))")
    assert done.returncode == 0 and done.stdout.strip() == "[]"
    assert done.stderr == ""
