"""Third-party native libraries that write their own log lines to file descriptor 2.

mediapipe's TensorFlow Lite and absl (C++) log on start-up whatever the Python logging, GLOG_minloglevel or
TF_CPP_MIN_LOG_LEVEL say: "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.", "WARNING: All log messages
before absl::InitializeLog() ...", "W0000 ... inference_feedback_manager.cc:114] ...". They are not ours and
say nothing a user can act on, so they are caught at the descriptor and dropped; any other line written there
in the meantime (another thread's warning, a real error of the library) is passed on unchanged.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

#: Lines known to be start-up chatter of TensorFlow Lite / absl inside mediapipe.
NOISE = re.compile(
    rb"^(INFO: Created TensorFlow Lite XNNPACK delegate"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IW]\d{4} [\d:. ]+\s+\d+ \S+\.cc:\d+\] )"
)

# fd 2 is process-wide: one redirection at a time. A nested use in the same thread redirects the outer one's
# file and hands its kept lines on to it.
_lock = threading.RLock()


@contextlib.contextmanager
def drop_native_noise() -> Iterator[None]:
    """While the block runs, fd 2 goes to a temporary file; afterwards its lines other than `NOISE` go back."""
    with _lock, tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True) if not NOISE.match(line)]
            if kept:
                os.write(2, b"".join(kept))
