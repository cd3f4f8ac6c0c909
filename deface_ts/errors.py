"""Errors that end a case with a message a user can act on.

Every error names the file (or ROI, or option) and the rule it broke. The CLI
turns them into a one-line message and a non-zero exit code; nothing is written.
"""

from __future__ import annotations


class DefaceError(Exception):
    """Base class of all expected failures of deface-ts."""

    exit_code = 2


class InputError(DefaceError):
    """The input cannot be used as it is (missing, ambiguous or inconsistent data)."""

    exit_code = 3


class OutputError(DefaceError):
    """The output location cannot be used (exists, lies inside the input, ...)."""

    exit_code = 4


class ConfigError(DefaceError):
    """A configuration file or option is invalid."""

    exit_code = 5


class PrivacyError(DefaceError):
    """The face could not be located, or a face survived defacing: fail closed."""

    exit_code = 6
