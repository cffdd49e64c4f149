"""Errors the user fixes, shared by every package.

Every error a user can fix (bad input, missing files, wrong names, a run directory of another
version) derives from :class:`UserError`. The CLI prints such an error as one clear message,
without a traceback, and exits with code 2. Package-specific errors (``spaces.policy.PolicyError``,
``compress.data.DatasetError``, ...) live in their packages and subclass it.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of errors the user fixes (bad input, missing files, wrong names).

    The CLI prints these as one clear message, without a traceback.
    """


class RunFormatError(UserError, ValueError):
    """A run directory is missing, empty, or written by an incompatible version."""


#: exceptions the CLI shows as one message (missing files are the user's to fix too)
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, NotADirectoryError)

__all__ = ["USER_ERRORS", "RunFormatError", "UserError"]
