"""The dataset error type (a user error: the CLI prints it as one message)."""

from __future__ import annotations


class DatasetError(RuntimeError):
    """A dataset is missing, malformed or misconfigured; the message says what to pass."""
