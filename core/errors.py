"""User-facing errors: one line that names the problem and the fix.

Library code raises :class:`UserError` (or a subclass) for anything the user can correct: a bad path, a
checkpoint that does not fit, an unknown name. The CLI prints ``error: <message>`` and exits with code 2;
the traceback is shown only with ``--debug``.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input. The message must say what is wrong and how to fix it."""


class DataError(UserError, ValueError):
    """A data spec, path or file that cannot be read as the requested dataset."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, corrupt, or does not fit the model."""


class ConfigError(UserError, ValueError):
    """A config file or a config value that cannot be used."""
