"""The shipped Dashboards saved objects: every field they use exists in the index templates."""

from __future__ import annotations

import argparse
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from pipeline import dashboards
from pipeline.search.query import mapped_fields
from pipeline.settings import DashboardsSettings, Settings
from pipeline.sinks.opensearch import ALERTS_TEMPLATE, EVENTS_TEMPLATE, load_template

OBJECTS = dashboards.load_objects()
BY_ID = {(o["type"], o["id"]): o for o in OBJECTS}
_LUCENE_FIELD = re.compile(r"([A-Za-z_@][A-Za-z0-9_.@]*):")


def _template_fields(template: str) -> set[str]:
    return set(mapped_fields(load_template(template)["template"]["mappings"]["properties"])) | {
        "@timestamp"
    }


FIELDS = {"audit-events": _template_fields(EVENTS_TEMPLATE)}
FIELDS["audit-alerts"] = _template_fields(ALERTS_TEMPLATE)


def _exists(field: str, title: str) -> bool:
    # labels.* are mapped on first use by the template's labels_as_keyword dynamic template
    return field in FIELDS[title] or (field.startswith("labels.") and field.count(".") == 1)


def _index_title(obj: dict[str, Any]) -> str:
    (ref,) = [r for r in obj["references"] if r["type"] == "index-pattern"]
    title: str = BY_ID[("index-pattern", ref["id"])]["attributes"]["title"]
    return title


def _fields_used(obj: dict[str, Any]) -> set[str]:
    attrs = obj["attributes"]
    used: set[str] = set()
    if obj["type"] == "index-pattern":
        used.add(attrs["timeFieldName"])
    query = attrs.get("kibanaSavedObjectMeta", {}).get("searchSourceJSON", {}).get("query", {})
    used.update(_LUCENE_FIELD.findall(query.get("query", "")))
    if obj["type"] == "search":
        used.update(attrs["columns"])
        used.update(field for field, _ in attrs["sort"])
    if obj["type"] == "visualization":
        used.update(
            a["params"]["field"] for a in attrs["visState"]["aggs"] if "field" in a["params"]
        )
    return used


def test_the_issue_asks_for_these_objects() -> None:
    kinds = [o["type"] for o in OBJECTS]
    assert kinds.count("index-pattern") == 2
    assert kinds.count("search") == 4
    assert kinds.count("visualization") == 4
    assert kinds.count("dashboard") == 1
    titles = {o["attributes"]["title"] for o in OBJECTS if o["type"] == "index-pattern"}
    settings = Settings().opensearch
    assert titles == {settings.events_index_prefix, settings.alerts_index_prefix}
    assert len(BY_ID) == len(OBJECTS)  # ids are unique


@pytest.mark.parametrize(
    "obj", [o for o in OBJECTS if o["type"] != "dashboard"], ids=lambda o: o["id"]
)
def test_every_field_a_saved_object_uses_exists_in_the_index_template(obj: dict[str, Any]) -> None:
    title = obj["attributes"]["title"] if obj["type"] == "index-pattern" else _index_title(obj)
    used = _fields_used(obj)
    assert used, obj["id"]
    missing = sorted(f for f in used if not _exists(f, title))
    assert not missing, f"{obj['type']} {obj['id']} uses fields not in {title}: {missing}"


def test_a_renamed_field_would_be_caught() -> None:
    vis = BY_ID[("visualization", "auditstream-top-actors")]
    broken = json.loads(json.dumps(vis))
    broken["attributes"]["visState"]["aggs"][1]["params"]["field"] = "user.identifier"
    assert not all(_exists(f, "audit-events") for f in _fields_used(broken))


def test_every_reference_resolves_and_the_dashboard_shows_every_panel() -> None:
    for obj in OBJECTS:
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in BY_ID, (obj["id"], ref)
    board = BY_ID[("dashboard", "auditstream-overview")]
    refs = {r["name"] for r in board["references"]}
    panels = board["attributes"]["panelsJSON"]
    assert {p["panelRefName"] for p in panels} == refs
    shown = {r["id"] for r in board["references"]}
    assert shown == {o["id"] for o in OBJECTS if o["type"] in ("visualization", "search")}


def test_json_text_attributes_are_serialised_for_the_api() -> None:
    api = dashboards.to_api(BY_ID[("visualization", "auditstream-events-by-outcome")])
    assert isinstance(api["attributes"]["visState"], str)
    assert json.loads(api["attributes"]["visState"])["type"] == "histogram"
    assert isinstance(api["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"], str)
    board = dashboards.to_api(BY_ID[("dashboard", "auditstream-overview")])
    assert isinstance(board["attributes"]["panelsJSON"], str)
    assert set(api) == {"type", "id", "attributes", "references"}


class _FakeDashboards(BaseHTTPRequestHandler):
    received: list[Any] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(200, {"status": {"overall": {"state": "green"}}})

    def do_POST(self) -> None:
        assert self.path == "/api/saved_objects/_bulk_create?overwrite=true"
        assert self.headers["osd-xsrf"] == "true"
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _FakeDashboards.received.append(body)
        self._answer(200, {"saved_objects": [{"type": o["type"], "id": o["id"]} for o in body]})


@pytest.fixture
def fake_dashboards() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _FakeDashboards)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_import_posts_every_object_with_overwrite(
    fake_dashboards: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(dashboards=DashboardsSettings(url=fake_dashboards))
    args = argparse.Namespace(dir=None, wait_s=5.0)
    assert dashboards.run_import(args, settings) == 0
    (body,) = _FakeDashboards.received[-1:]
    assert [o["id"] for o in body] == [o["id"] for o in OBJECTS]
    assert "imported dashboard/auditstream-overview" in capsys.readouterr().out
