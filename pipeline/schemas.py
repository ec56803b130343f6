"""The Avro schemas in ``schemas/``, parsed once at start-up.

``schemas/registry.json`` lists every published schema with its Confluent-style
id, subject and version. A schema file that is missing, not JSON or not valid
Avro stops start-up with a :class:`ConfigError` naming the file and the problem.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

from fastavro.schema import parse_schema, to_parsing_canonical_form

from pipeline.errors import ConfigError

ACCESS_EVENT = "io.auditstream.AccessEvent"
ENRICHED_EVENT = "io.auditstream.EnrichedEvent"
ALERT = "io.auditstream.Alert"
DEAD_LETTER = "io.auditstream.DeadLetter"

_CRC64_EMPTY = 0xC15D213AA4D7A795
_CRC64_TABLE: list[int] = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_CRC64_EMPTY & -(_fp & 1))
    _CRC64_TABLE.append(_fp)


def crc64_avro(data: bytes) -> int:
    """The Rabin CRC-64 fingerprint the Avro specification defines."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


@dataclass(frozen=True)
class SchemaEntry:
    """One published schema version."""

    id: int
    subject: str
    version: int
    file: Path
    name: str
    parsed: dict[str, Any]  # fastavro's parsed form, marked so it is not parsed again per call
    canonical: str
    text: str

    @cached_property
    def fingerprint(self) -> bytes:
        """The 8 bytes single-object encoding puts after ``C3 01`` (little-endian)."""
        return struct.pack("<Q", crc64_avro(self.canonical.encode()))

    @property
    def label(self) -> str:
        return f"{self.subject} v{self.version} (id {self.id})"


def default_schemas_dir() -> Path:
    """``schemas/`` in a source checkout, or the copy packaged inside the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "schemas", here / "_schemas"):
        if (candidate / "registry.json").is_file():
            return candidate
    raise ConfigError(
        f"no schemas/registry.json next to {here}; set AUDITSTREAM_CODEC__SCHEMAS_DIR"
    )


class SchemaStore:
    """Every known schema, by id, by fingerprint and by record name."""

    def __init__(self, entries: list[SchemaEntry]) -> None:
        self.entries = entries
        self._by_id = {e.id: e for e in entries}
        self._by_fingerprint = {e.fingerprint: e for e in entries}

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaStore:
        directory = directory or default_schemas_dir()
        index_file = directory / "registry.json"
        index = _read_json(index_file)
        try:
            rows = sorted(index["schemas"], key=lambda r: r["id"])
        except (KeyError, TypeError) as exc:
            raise ConfigError(
                f"{index_file}: expected {{'schemas': [{{id, subject, version, file}}]}}: {exc}"
            ) from None
        raw_by_name: dict[str, Any] = {}
        entries: list[SchemaEntry] = []
        # Ids grow with publication, so a referenced record is parsed before its users.
        for row in rows:
            path = directory / row["file"]
            raw = _read_json(path)
            expanded = _expand(raw, raw_by_name)
            try:
                parsed = parse_schema(expanded)
            except Exception as exc:  # fastavro raises several types for bad schemas
                raise ConfigError(f"{path}: not a valid Avro schema: {exc}") from None
            if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str):
                raise ConfigError(f"{path}: the top-level schema must be a named record")
            name = parsed["name"]
            raw_by_name[name] = expanded
            entries.append(
                SchemaEntry(
                    id=int(row["id"]),
                    subject=str(row["subject"]),
                    version=int(row["version"]),
                    file=path,
                    name=name,
                    parsed=parsed,
                    canonical=to_parsing_canonical_form(parsed),
                    text=json.dumps(expanded),
                )
            )
        entries.sort(key=lambda e: e.id)
        return cls(entries)

    def by_id(self, schema_id: int) -> SchemaEntry | None:
        return self._by_id.get(schema_id)

    def by_fingerprint(self, fingerprint: bytes) -> SchemaEntry | None:
        return self._by_fingerprint.get(fingerprint)

    def latest(self, name: str) -> SchemaEntry:
        versions = [e for e in self.entries if e.name == name]
        if not versions:
            raise ConfigError(f"no schema named {name} in the schema registry index")
        return max(versions, key=lambda e: e.version)

    def add(self, entry: SchemaEntry) -> None:
        """Learn a schema fetched from a schema registry."""
        self.entries.append(entry)
        self._by_id[entry.id] = entry
        self._by_fingerprint[entry.fingerprint] = entry


@cache
def default_store() -> SchemaStore:
    return SchemaStore.load()


def entry_from_schema(
    schema: dict[str, Any], *, schema_id: int, subject: str, version: int, file: Path
) -> SchemaEntry:
    parsed = parse_schema(schema)
    if not isinstance(parsed, dict):
        raise ConfigError(f"{file}: the top-level schema must be a named record")
    return SchemaEntry(
        id=schema_id,
        subject=subject,
        version=version,
        file=file,
        name=str(parsed["name"]),
        parsed=parsed,
        canonical=to_parsing_canonical_form(parsed),
        text=json.dumps(schema),
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: schema file not found") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def _expand(node: Any, known: dict[str, Any]) -> Any:
    """Inline records defined in other files, so each schema stands alone."""
    if isinstance(node, str) and node in known:
        return known[node]
    if isinstance(node, list):
        return [_expand(n, known) for n in node]
    if isinstance(node, dict):
        return {
            k: _expand(v, known) if k in ("type", "items", "values", "fields") else v
            for k, v in node.items()
        }
    return node
