"""Writing search results: a readable table, JSON lines or CSV.

Every writer receives documents already masked for the caller (see
:mod:`pipeline.access`), so a masked field stays masked in every format.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from typing import Any, Protocol, TextIO

from pipeline.ecs import field_paths

TABLE_COLUMNS = [
    "@timestamp",
    "user.id",
    "event.action",
    "event.outcome",
    "source.ip",
    "service.name",
    "event.reason",
]
TIMELINE_COLUMNS = [
    "@timestamp",
    "event.kind",
    "event.action",
    "event.outcome",
    "source.ip",
    "service.name",
    "detail",
]
CSV_COLUMNS = [
    "@timestamp",
    "event.id",
    "event.kind",
    "user.id",
    "user.name",
    "event.action",
    "event.outcome",
    "event.reason",
    "source.ip",
    "source.port",
    "source.geo.country_iso_code",
    "user_agent.original",
    "service.name",
    "host.name",
    "auditstream.resource.type",
    "auditstream.resource.id",
    "rule.name",
    "message",
]
_WIDTHS = {"@timestamp": 27, "event.id": 36, "source.ip": 15, "event.kind": 6}


class Writer(Protocol):
    def write(self, doc: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


def value(doc: Mapping[str, Any], column: str) -> str:
    """A column's text: a dotted path, or ``detail`` (an alert's rule and summary)."""
    if column == "detail":
        if doc.get("event", {}).get("kind") == "alert":
            alert = doc.get("auditstream", {}).get("alert", {})
            rule = doc.get("rule", {}).get("name", "")
            return f"ALERT {rule} ({alert.get('severity', '')}): {doc.get('message', '')}"
        return str(doc.get("event", {}).get("reason", ""))
    found = field_paths(doc).get(column)
    if found is None:
        return ""
    if isinstance(found, list):
        return ",".join(str(v) for v in found)
    if isinstance(found, bool):
        return "true" if found else "false"
    return str(found)


class TableWriter:
    """Fixed-width columns, streamed (no buffering, so any size prints at once)."""

    def __init__(self, out: TextIO, columns: list[str]) -> None:
        self.out = out
        self.columns = columns
        self.widths = [max(_WIDTHS.get(c, 14), len(c)) for c in columns]
        self._row(columns)

    def _row(self, cells: list[str]) -> None:
        parts = []
        for i, (cell, width) in enumerate(zip(cells, self.widths, strict=True)):
            text = cell.replace("\n", " ")
            last = i == len(cells) - 1
            if not last and len(text) > width:
                text = text[: width - 1] + "…"
            parts.append(text if last else text.ljust(width))
        self.out.write("  ".join(parts).rstrip() + "\n")

    def write(self, doc: Mapping[str, Any]) -> None:
        cells = [value(doc, c) for c in self.columns]
        if cells and self.columns[0] == "@timestamp":
            cells[0] = cells[0].rstrip("Z")
        self._row(cells)

    def close(self) -> None:
        self.out.flush()


class JsonWriter:
    """One document a line, keys in the stored order."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, doc: Mapping[str, Any]) -> None:
        self.out.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self.out.flush()


class CsvWriter:
    def __init__(self, out: TextIO, columns: list[str]) -> None:
        self.out = out
        self.columns = columns
        self._csv = csv.writer(out, lineterminator="\n")
        self._csv.writerow(columns)

    def write(self, doc: Mapping[str, Any]) -> None:
        self._csv.writerow([value(doc, c) for c in self.columns])

    def close(self) -> None:
        self.out.flush()


def make_writer(
    fmt: str, out: TextIO, columns: list[str] | None, *, timeline: bool = False
) -> Writer:
    if fmt == "json":
        return JsonWriter(out)
    if fmt == "csv":
        return CsvWriter(out, columns or CSV_COLUMNS)
    return TableWriter(out, columns or (TIMELINE_COLUMNS if timeline else TABLE_COLUMNS))
