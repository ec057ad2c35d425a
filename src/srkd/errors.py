"""One exception type for every mistake a user can make.

The CLI prints ``error: <message>`` and exits with status 2 for an :class:`SrkdError`, and never shows a
traceback for it. Anything else that escapes is a bug in srkd and keeps its traceback, so that it gets reported.
Messages name the file or key at fault and, where possible, what would be accepted instead.
"""

from __future__ import annotations


class SrkdError(Exception):
    """A problem caused by the user's input or environment (bad file, bad config, missing data...)."""

    exit_code = 2


class ConfigError(SrkdError):
    """A configuration file or ``--set`` override that does not validate."""


class DataError(SrkdError):
    """An image, folder or dataset that cannot be used."""


class CheckpointError(SrkdError):
    """A checkpoint that is missing, corrupt, unsafe or does not fit the requested use."""


class TrainingError(SrkdError):
    """A training run that must stop (non-finite loss, disk full...); the last good checkpoint is kept."""
