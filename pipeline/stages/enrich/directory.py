"""Identity directory: who the actor is (name, email, department, title, manager, status).

The source is an HR or IdP export, JSON or CSV, with one row per user::

    id,display_name,email,department,title,manager,privileged,employment_status
    u00042,Ada Lovelace,ada@example.com,engineering,Staff Engineer,u00007,true,active

JSON is a list of such objects, or ``{"users": [...]}``; ``user_id`` is accepted
for ``id``, unknown columns are ignored. ``employment_status`` is ``active``,
``terminated`` or ``on_leave``. The whole file is read into an immutable dict
at start-up and again, in a background thread, whenever it changes; a lookup is
one dict access.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from pipeline.errors import ConfigError
from pipeline.settings import EnrichSettings
from pipeline.stages.enrich.base import NOTHING, Context, Enricher, WatchedFile, field

EMPLOYMENT_STATUSES = ("active", "terminated", "on_leave")


class DirectoryEntry(BaseModel):
    """One user in the export."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    id: str = Field(min_length=1, validation_alias=AliasChoices("id", "user_id"))
    display_name: str | None = None
    email: str | None = None
    department: str | None = None
    title: str | None = None
    manager: str | None = None
    privileged: bool | None = None
    employment_status: Literal["active", "terminated", "on_leave"] | None = None

    def context(self) -> Context:
        return MappingProxyType({"directory": self.model_dump(exclude={"id"})})


def _rows(path: Path) -> list[tuple[str, Any]]:
    """``(where, row)`` pairs from a JSON or CSV export."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the identity directory: {exc}") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        if not reader.fieldnames or not {"id", "user_id"} & set(reader.fieldnames):
            raise ConfigError(f"{path}: CSV header must name an 'id' (or 'user_id') column")
        # An empty cell is an absent value, not an empty name or a false flag.
        return [
            (f"line {reader.line_num}", {k: v for k, v in row.items() if k and v not in ("", None)})
            for row in reader
        ]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("users"), list):
        data = data["users"]
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of users or {{'users': [...]}}")
    return [(f"users[{i}]", row) for i, row in enumerate(data)]


def load_directory(path: Path) -> Mapping[str, Context]:
    """User id → its ``{"directory": {...}}`` context, read-only; ConfigError names the row."""
    users: dict[str, Context] = {}
    for where, row in _rows(path):
        try:
            entry = DirectoryEntry.model_validate(row)
        except PydanticValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "row"
            raise ConfigError(f"{path}: {where}: {loc}: {err['msg']}") from None
        if entry.id in users:
            raise ConfigError(f"{path}: {where}: user {entry.id!r} appears twice")
        users[entry.id] = entry.context()
    return MappingProxyType(users)


class DirectoryEnricher(Enricher):
    """``directory`` for the actor, by ``actor.id``."""

    name = "directory"
    fields = ("directory",)

    def __init__(self, path: Path, *, reload_interval_s: float = 5.0, watch: bool = True) -> None:
        self._file = WatchedFile(
            path,
            load_directory,
            interval_s=reload_interval_s,
            what="identity directory",
            watch=watch,
        )

    @classmethod
    def from_settings(cls, settings: EnrichSettings) -> DirectoryEnricher | None:
        if settings.directory_path is None:
            return None
        return cls(settings.directory_path, reload_interval_s=settings.reload_interval_s)

    @property
    def watched(self) -> WatchedFile[Mapping[str, Context]]:
        return self._file

    def __len__(self) -> int:
        return len(self._file.current)

    def enrich(self, event: Mapping[str, Any]) -> Context:
        actor_id = field(event, "actor", "id")
        if not actor_id:
            return NOTHING
        return self._file.current.get(actor_id, NOTHING)

    def close(self) -> None:
        self._file.close()
