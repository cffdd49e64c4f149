"""`autocompress report` (being written; see the issue tracker)."""

from __future__ import annotations


def register(sub):
    p = sub.add_parser("report", help="(not yet available)")
    p.set_defaults(func=lambda args: (_ for _ in ()).throw(NotImplementedError("autocompress report")))
    return p
