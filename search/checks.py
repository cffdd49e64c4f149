"""Checks of the inputs every command shares, run before any work, and output folders that vanish
when a command fails on bad input.

One implementation for every subcommand (``search/commands/*``) and the library entry points
(``search.driver.run_search``):

- :func:`check_device`: ``--device`` is ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and present here;
- :func:`check_storage`: ``--storage`` parses (``search.backends._study.parse_storage``), its
  SQLAlchemy dialect exists and its database driver is installed (the message names the pip package);
- :func:`check_out_dir` / :func:`check_out_file`: ``--out`` is not an existing file (a folder
  output) or folder (a file output), and no parent of it is a file;
- :func:`check_data_dir`: ``--data-dir`` exists and is a folder;
- :func:`output_dir`: creates the output folder after these checks pass, and removes it again
  when the command then fails with a user error before writing a result (never a folder that
  existed before the command started).

Each failure is one line naming the flag, the value and what is allowed, as an :class:`InputError`
(a :class:`~autocompress.errors.UserError`: the CLI prints it and exits with code 2).
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from autocompress.errors import USER_ERRORS, UserError
from search.backends._study import StorageSpec, parse_storage

log = logging.getLogger("search.checks")


class InputError(UserError, ValueError):
    """A command-line value that cannot work (device, storage, output or data folder)."""


#: device strings the training and evaluation code accepts
DEVICES = "cpu, cuda, cuda:N, mps"

#: Python module of a database driver -> the pip package that installs it
DRIVER_PACKAGES = {
    "psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pg8000": "pg8000", "asyncpg": "asyncpg",
    "MySQLdb": "mysqlclient", "pymysql": "pymysql", "mysql": "mysql-connector-python", "mariadb": "mariadb",
    "cx_Oracle": "cx_Oracle", "oracledb": "oracledb", "pyodbc": "pyodbc", "pymssql": "pymssql",
}

STORAGE_FORMS = ("sqlite:///path.db, journal:///path.log, a path ending in .db or .log, or a database URL "
                 "such as postgresql://user@host/db or mysql+pymysql://user@host/db")


def check_device(device: str, flag: str = "--device", error: type[UserError] = InputError) -> str:
    """Return ``device`` when it names a torch device that exists on this machine; else ``error``.

    Allowed: ``cpu``, ``cuda``, ``cuda:N`` (N below the number of visible GPUs) and ``mps``.
    """
    text = str(device)
    if re.fullmatch(r"cpu|cuda(:\d+)?|mps", text) is None:
        raise error(f"{flag} = {text!r}: not a device; allowed {DEVICES}")
    if text == "cpu":
        return text
    import torch

    if text == "mps":
        if not torch.backends.mps.is_available():
            raise error(f"{flag} = mps: no Apple MPS device is available here; use cpu")
        return text
    if not torch.cuda.is_available():
        raise error(f"{flag} = {text}: no CUDA device is available here (torch.cuda.is_available() is False); "
                    "use cpu")
    count = torch.cuda.device_count()
    index = int(text.partition(":")[2] or 0)
    if count and index >= count:
        raise error(f"{flag} = {text}: this machine has {count} CUDA device(s); allowed cuda:0 to cuda:{count - 1}")
    return text


def _hidden(url: str) -> str:
    """``url`` with its password masked (for messages)."""
    return re.sub(r"(://[^:/@]+):[^/]*@", r"\1:***@", url)


def check_storage(url: str | None, run_dir: str | Path, flag: str = "--storage") -> StorageSpec:
    """Parse the storage URL (``None``: ``sqlite:///RUN/study.db``) and check that it can be opened:
    a known SQLAlchemy dialect whose database driver is installed. Returns the parsed spec.

    Nothing is created or connected to; a database that is down is found when the search opens it.
    """
    try:
        spec = parse_storage(url, Path(run_dir))
    except UserError as exc:
        raise InputError(str(exc).replace("--storage", flag, 1)) from None
    if spec.kind != "rdb":
        return spec
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = _hidden(spec.url)
    try:
        parsed = make_url(spec.url)
        dialect = parsed.get_dialect()
    except NoSuchModuleError:  # an ArgumentError too: first
        scheme = spec.url.partition("://")[0]
        raise InputError(f"{flag} = {shown!r}: unknown database scheme {scheme}://; allowed {STORAGE_FORMS}") from None
    except (ArgumentError, ValueError):
        raise InputError(f"{flag} = {shown!r}: not a storage URL; allowed {STORAGE_FORMS}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise InputError(f"{flag} = {shown!r}: an in-memory database cannot be shared or resumed; give a file, "
                         "e.g. sqlite:///runs/study.db")
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = (getattr(exc, "name", None) or str(exc)).split(".")[0]
        package = DRIVER_PACKAGES.get(module, module)
        raise InputError(f"{flag} = {shown!r}: its database driver {module} is not installed; "
                         f"pip install {package}") from None
    return spec


def _file_ancestor(path: Path) -> Path | None:
    """The first existing path on the way to ``path`` that is not a folder (``path`` itself included)."""
    for p in [*reversed(path.parents), path]:
        if p.exists() and not p.is_dir():
            return p
    return None


def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as an output folder: neither it nor a parent may be an existing file."""
    p = Path(path).expanduser()
    blocker = _file_ancestor(p)
    if blocker == p:
        raise InputError(f"{flag} = {str(path)!r}: an existing file, not a folder; give a folder (new or existing)")
    if blocker is not None:
        raise InputError(f"{flag} = {str(path)!r}: {blocker} is a file, so no folder can be made under it")
    return p


def check_out_file(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as an output file: it may not be an existing folder, nor lie under a file."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise InputError(f"{flag} = {str(path)!r}: an existing folder; give a file name, e.g. {p / 'report.html'}")
    blocker = _file_ancestor(p.parent)
    if blocker is not None:
        raise InputError(f"{flag} = {str(path)!r}: {blocker} is a file, so no file can be written under it")
    return p


def check_data_dir(path: str | Path | None, flag: str = "--data-dir") -> Path | None:
    """``path`` (``~`` expanded) when it is an existing folder; ``None`` stays ``None``."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_dir():
        what = "not a folder" if p.exists() else "no such folder"
        raise InputError(f"{flag} = {str(path)!r}: {what}")
    return p


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing = p
    return missing


@contextlib.contextmanager
def output_dir(path: str | Path, *, flag: str = "--out", create: bool = True,
               keep: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Check ``path`` (:func:`check_out_dir`), create it with its missing parents (``create``;
    otherwise the block does) and yield it.

    When the block raises a user error (:data:`autocompress.errors.USER_ERRORS`) and ``keep(path)``
    is not true (default: never; e.g. "a trial record exists"), what was created since the call is
    removed again, so bad input leaves no half-created output behind. A folder that existed before
    is never removed; other exceptions (bugs, Ctrl-C) leave everything for inspection.
    """
    p = check_out_dir(path, flag)
    created = _first_missing(p.absolute())
    if create:
        p.mkdir(parents=True, exist_ok=True)
    try:
        yield p
    except USER_ERRORS:
        if created is not None and created.exists() and not (keep is not None and keep(p)):
            shutil.rmtree(created, ignore_errors=True)
            log.debug("removed %s (created by this command, which failed on its input)", created)
        raise


__all__ = ["DEVICES", "DRIVER_PACKAGES", "InputError", "check_data_dir", "check_device", "check_out_dir",
           "check_out_file", "check_storage", "output_dir"]
