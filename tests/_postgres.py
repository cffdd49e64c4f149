"""A throwaway PostgreSQL server for tests: Debian's server binaries, a temporary data directory,
trust authentication on 127.0.0.1 and a free port. Stopped (and its data deleted) at teardown.

As root the server runs as the ``postgres`` system user (initdb refuses root), through ``runuser``.
:func:`skip_reason` says why a test cannot have a server (no binaries, no ``psycopg``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN_GLOB = "/usr/lib/postgresql/*/bin"
DATABASE = "autocompress"


def server_bin() -> Path | None:
    """The newest Debian PostgreSQL server bin directory that has ``initdb`` and ``pg_ctl``."""
    found = [Path(p) for p in sorted(glob.glob(BIN_GLOB), key=lambda p: int(Path(p).parent.name))
             if (Path(p) / "initdb").is_file() and (Path(p) / "pg_ctl").is_file()]
    return found[-1] if found else None


def skip_reason() -> str | None:
    """Why no throwaway server can be started here, or None."""
    if server_bin() is None:
        return f"no PostgreSQL server binaries ({BIN_GLOB}/initdb); `apt-get install postgresql` provides them"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is not installed (`pip install 'psycopg[binary]'`)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without `runuser` to start the server as the postgres user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], log: Path) -> None:
    """Run a server command as the server user; on failure raise with the end of its output."""
    done = subprocess.run(_as_server_user(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=120)
    with open(log, "a") as fh:
        fh.write(done.stdout)
    if done.returncode != 0:
        server_log = log.parent / "server.log"
        tail = server_log.read_text()[-2000:] if server_log.is_file() else ""
        raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stdout[-2000:]}{tail}")


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield its SQLAlchemy URL (``postgresql://postgres@127.0.0.1:PORT/autocompress``)."""
    bin_dir = server_bin()
    assert bin_dir is not None, skip_reason()
    root = Path(tempfile.mkdtemp(prefix="ac-pg-"))
    data, log, port = root / "data", root / "commands.log", _free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], log)
        opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=60 -c fsync=off"
        _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "server.log"), "-w", "start"],
             log)
        _wait_and_create(port)
        yield f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _wait_and_create(port: int, timeout_s: float = 30.0) -> None:
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                                 autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
