"""Exception types that are the user's to fix: the CLI prints them as one message, no traceback.

Every such error derives from :class:`spaces._schema.UserError` (schema, checkpoint, unknown
name, dataset, divergence, run format, storage, ...); missing files are the user's too.
"""

from __future__ import annotations

from spaces._schema import UserError

USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, NotADirectoryError)
