"""Our own progress on stderr for a person at a terminal, and the process timings a ``--json`` summary reports.

The display is one line rewritten in place ("deface-ts: case 2/5 ct_007: write (3.1 s)"); it is off when stderr
is not a terminal (a Slurm log, a pipe) or with ``--quiet``, so logs and scripts see only results and errors.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO


def process_age_s() -> float | None:
    """Seconds since this process started (Linux: /proc/self/stat's starttime, 10 ms ticks); None elsewhere."""
    try:
        # Field 22 (starttime, clock ticks after boot); fields are counted after the command name's ')'.
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return round(time.clock_gettime(time.CLOCK_BOOTTIME) - started, 3)
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class StageProgress:
    """Callable told each stage's name as it starts (``deface(progress=...)``); remembers when the first began."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = not quiet and self.stream.isatty()
        self.start_to_first_stage_s: float | None = None
        self.prefix = ""
        self._started = time.perf_counter()
        self._shown = False

    def case(self, number: int, total: int, name: str) -> None:
        """A batch moves on to its ``number``-th case (1-based) of ``total``."""
        self.prefix = f"case {number}/{total} {name}: "
        self._started = time.perf_counter()
        self._show("starting")

    def __call__(self, stage: str) -> None:
        if self.start_to_first_stage_s is None:
            self.start_to_first_stage_s = process_age_s()
        self._show(stage)

    def _show(self, what: str) -> None:
        if self.enabled:
            elapsed = time.perf_counter() - self._started
            self.stream.write(f"\r\033[Kdeface-ts: {self.prefix}{what} ({elapsed:.1f} s)")
            self.stream.flush()
            self._shown = True

    def clear(self) -> None:
        """Remove the progress line, so results and errors print on a clean line."""
        if self._shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._shown = False
