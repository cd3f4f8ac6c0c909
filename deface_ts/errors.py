"""Every error that ends a case with a message a user can act on, and its exit code.

Every error names the file (or ROI, or option) and the rule it broke. The CLI
turns them into a one-line message and a non-zero exit code; nothing is written.

Exit codes: 2 usage or other, 3 input, 4 output, 5 config, 6 privacy (fail
closed), 7 model (a network crashed, ran out of memory or cannot be loaded).
Batch and Slurm report them per case.
"""

from __future__ import annotations


class DefaceError(Exception):
    """Base class of all expected failures of deface-ts; a subclass names its exit code in its bases."""

    exit_code = 2

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code


class InputError(DefaceError, exit_code=3):
    """The input cannot be used as it is (missing, ambiguous or inconsistent data)."""


class MissingWeightsError(InputError):
    """A TotalSegmentator task's weights are not on disk (deface-ts never downloads them)."""


class LicenceError(InputError):
    """A licensed TotalSegmentator task was requested but no licence number is configured."""


class OutputError(DefaceError, exit_code=4):
    """The output location cannot be used (exists, lies inside the input, ...)."""


class ConfigError(DefaceError, exit_code=5):
    """A configuration file or option is invalid."""


class PrivacyError(DefaceError, exit_code=6):
    """The face could not be located, or a face survived defacing: fail closed."""


class BlankRenderError(PrivacyError):
    """A render shows no surface (or a uniform image): nothing could be verified, so fail closed."""


class CavityError(DefaceError):
    """The planned removal reaches into the cranial cavity: the case stops (brain is never removed)."""


class ModelError(DefaceError, exit_code=7):
    """A network failed: its checkpoint cannot be loaded, it crashed or ran out of memory.

    Not the input's fault: the same case may pass on another machine or with more memory.
    """
