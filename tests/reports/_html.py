"""Parse a report page: embedded JSON, tables, attributes that load resources."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any


class ReportPage(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: dict[str, str] = {}
        self.loads: list[tuple[str, str, str]] = []  # (tag, attr, value)
        self.links: list[str] = []
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self._script_id: str | None = None
        self._table: str | None = None
        self._row: dict[str, Any] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for attr in ("src", "href", "data", "srcset", "poster", "action"):
            if a.get(attr) is not None:
                self.loads.append((tag, attr, a[attr]))
        if tag == "a" and a.get("href"):
            self.links.append(a["href"])
        if tag == "script":
            self._script_id = a.get("id") or f"inline-{len(self.scripts)}"
            self.scripts[self._script_id] = ""
        if tag == "table" and a.get("id"):
            self._table = a["id"]
            self.tables[self._table] = []
        if tag == "tr" and self._table and a.get("data-trial"):
            self._row = {"trial": int(a["data-trial"])}
            self.tables[self._table].append(self._row)
        if tag == "td" and self._row is not None and a.get("data-col") not in (None, "trial"):
            self._row[a["data-col"]] = a.get("data-value")

    def handle_endtag(self, tag):
        if tag == "script":
            self._script_id = None
        if tag == "table":
            self._table = None
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._script_id is not None:
            self.scripts[self._script_id] += data


def parse(path: Path) -> ReportPage:
    page = ReportPage()
    page.feed(Path(path).read_text(encoding="utf-8"))
    return page


def embedded(page: ReportPage, script_id: str) -> Any:
    return json.loads(page.scripts[script_id])
