"""One exception type for every mistake a user can make.

The CLI prints ``error: <message>`` and exits with status 2 for an :class:`SrkdError`, and never shows a
traceback for it. Anything else that escapes is a bug in srkd and keeps its traceback, so that it gets reported.
Messages name the file or key at fault and, where possible, what would be accepted instead.
"""

from __future__ import annotations


class SrkdError(Exception):
    """A problem caused by the user's input or environment (bad file, bad config, missing data...).

    The message is cut at ``MAX_MESSAGE`` characters: messages quote what they refuse, and what they refuse may
    be a crafted megabyte (a YAML alias bomb once printed a 312 MB line). Each message clips its own quotes too;
    this is the net under all of them.
    """

    exit_code = 2
    MAX_MESSAGE = 2000

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str) and len(args[0]) > self.MAX_MESSAGE:
            args = (f"{args[0][:self.MAX_MESSAGE]}... (message cut at {self.MAX_MESSAGE} characters)", *args[1:])
        super().__init__(*args)


class ConfigError(SrkdError):
    """A configuration file or ``--set`` override that does not validate."""


class DataError(SrkdError):
    """An image, folder or dataset that cannot be used."""


class CheckpointError(SrkdError):
    """A checkpoint that is missing, corrupt, unsafe or does not fit the requested use."""


class TrainingError(SrkdError):
    """A training run that must stop (non-finite loss, disk full...); the last good checkpoint is kept."""
