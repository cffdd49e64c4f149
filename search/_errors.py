"""Exception types that are the user's to fix: the CLI prints them as one message, no traceback."""

from __future__ import annotations

from compress.models.checkpoint import CheckpointError
from compress.registry import UnknownNameError
from search.records import RunFormatError
from spaces._schema import SchemaError

USER_ERRORS: tuple[type[BaseException], ...] = (
    SchemaError, CheckpointError, UnknownNameError, RunFormatError, FileNotFoundError, NotADirectoryError,
)


def register_user_error(exc_type: type[BaseException]) -> None:
    """Let a module add its own user-facing error type (e.g. dataset errors)."""
    global USER_ERRORS
    if exc_type not in USER_ERRORS:
        USER_ERRORS = USER_ERRORS + (exc_type,)
