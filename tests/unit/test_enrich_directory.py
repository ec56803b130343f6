"""Identity directory enrichment: JSON and CSV exports, reload when the file changes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import ConfigError
from pipeline.stages.enrich.directory import DirectoryEnricher, load_directory
from tests.factories import make_event

ADA = {
    "id": "u00042",
    "display_name": "Ada Lovelace",
    "email": "ada@example.com",
    "department": "engineering",
    "title": "Staff Engineer",
    "manager": "u00007",
    "privileged": True,
    "employment_status": "active",
}


def _write_json(path: Path, users: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"users": users}))
    return path


def _event(actor_id: str) -> dict[str, Any]:
    return make_event(actor={"id": actor_id, "type": "user", "name": None, "tenant": None})


def test_json_export_gives_the_actors_directory_context(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "dir.json", [ADA, {"id": "u00007", "display_name": "Boss"}])
    enricher = DirectoryEnricher(path, watch=False)
    assert enricher.enrich(_event("u00042")) == {
        "directory": {k: v for k, v in ADA.items() if k != "id"}
    }
    boss = enricher.enrich(_event("u00007"))["directory"]
    assert boss["display_name"] == "Boss"
    assert boss["privileged"] is None and boss["employment_status"] is None


def test_unknown_actor_gets_nothing(tmp_path: Path) -> None:
    enricher = DirectoryEnricher(_write_json(tmp_path / "d.json", [ADA]), watch=False)
    assert enricher.enrich(_event("svc-001")) == {}


def test_plain_json_list_and_user_id_alias(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"user_id": "u1", "employment_status": "on_leave", "x": 1}]))
    directory = load_directory(path)
    assert directory["u1"]["directory"]["employment_status"] == "on_leave"


def test_csv_export(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text(
        "id,display_name,email,department,title,manager,privileged,employment_status,cost_center\n"
        "u00042,Ada Lovelace,ada@example.com,engineering,Staff Engineer,u00007,true,active,42\n"
        "u00043,Alan Turing,,research,,,no,terminated,\n"
    )
    enricher = DirectoryEnricher(path, watch=False)
    assert enricher.enrich(_event("u00042"))["directory"]["privileged"] is True
    alan = enricher.enrich(_event("u00043"))["directory"]
    assert alan["email"] is None  # an empty cell is absent
    assert alan["privileged"] is False
    assert alan["employment_status"] == "terminated"


@pytest.mark.parametrize(
    ("content", "suffix", "problem"),
    [
        ("{not json", ".json", r"d\.json: not valid JSON"),
        ('{"people": []}', ".json", r"d\.json: expected a list of users"),
        ('[{"id": "u1", "employment_status": "fired"}]', ".json", r"users\[0\]: employment_status"),
        ('[{"display_name": "x"}]', ".json", r"users\[0\]: id: Field required"),
        ('[{"id": "u1"}, {"id": "u1"}]', ".json", r"users\[1\]: user 'u1' appears twice"),
        ("name,email\nx,y\n", ".csv", r"d\.csv: CSV header must name an 'id'"),
        ("id,privileged\nu1,maybe\n", ".csv", r"d\.csv: line 2: privileged"),
    ],
)
def test_invalid_export_is_a_config_error_naming_the_file_and_row(
    tmp_path: Path, content: str, suffix: str, problem: str
) -> None:
    path = tmp_path / f"d{suffix}"
    path.write_text(content)
    with pytest.raises(ConfigError, match=problem):
        DirectoryEnricher(path, watch=False)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.json: identity directory not found"):
        DirectoryEnricher(tmp_path / "nope.json", watch=False)


def test_changed_file_is_reloaded_and_a_bad_one_keeps_the_last_good(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "d.json", [ADA])
    enricher = DirectoryEnricher(path, watch=False)
    assert not enricher.watched.reload_if_changed()  # unchanged: nothing to do
    moved = {**ADA, "department": "finance", "employment_status": "terminated"}
    _write_json(tmp_path / "new.json", [moved, {"id": "u9"}]).replace(path)
    assert enricher.watched.reload_if_changed()
    assert enricher.enrich(_event("u00042"))["directory"]["employment_status"] == "terminated"
    assert len(enricher) == 2
    path.write_text("{broken")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert not enricher.watched.reload_if_changed()
    assert enricher.enrich(_event("u00042"))["directory"]["department"] == "finance"


def test_background_thread_reloads_without_a_lookup_doing_io(tmp_path: Path) -> None:
    path = _write_json(tmp_path / "d.json", [ADA])
    enricher = DirectoryEnricher(path, reload_interval_s=0.02)
    try:
        before = enricher.watched.current
        _write_json(tmp_path / "new.json", [{**ADA, "title": "Principal"}]).replace(path)
        deadline = time.monotonic() + 5
        while enricher.watched.reloads == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert enricher.enrich(_event("u00042"))["directory"]["title"] == "Principal"
        assert before["u00042"]["directory"]["title"] == "Staff Engineer"  # old snapshot intact
        with pytest.raises(TypeError):
            enricher.watched.current["u1"] = {}  # type: ignore[index]
    finally:
        enricher.close()
