"""The dataset error type (a user error: the CLI prints it as one message)."""

from __future__ import annotations

from autocompress.errors import UserError


class DatasetError(UserError, RuntimeError):
    """A dataset is missing, malformed or misconfigured; the message says what to pass."""
