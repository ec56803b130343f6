"""``auditstream dashboards import``: load the shipped saved objects into OpenSearch Dashboards.

``deploy/dashboards/saved_objects.json`` holds index patterns, saved searches,
visualisations and one overview dashboard in a readable form: the attributes
Dashboards stores as JSON strings (``visState``, ``panelsJSON``,
``searchSourceJSON`` …) are objects there. :func:`to_api` serialises them and
the command loads them with the saved objects API (``_bulk_create`` with
``overwrite``), so running it again updates them in place.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pipeline.errors import AuditstreamError, ConfigError, ServiceUnavailable
from pipeline.settings import Settings

SAVED_OBJECTS = "saved_objects.json"
# Attributes the saved objects API takes as JSON text, by their path in ``attributes``.
_JSON_TEXT = (
    ("visState",),
    ("uiStateJSON",),
    ("panelsJSON",),
    ("optionsJSON",),
    ("kibanaSavedObjectMeta", "searchSourceJSON"),
)


class DashboardsError(AuditstreamError):
    """Dashboards refused the saved objects."""


def default_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "deploy" / "dashboards", here / "_dashboards"):
        if (candidate / SAVED_OBJECTS).is_file():
            return candidate
    raise ConfigError(f"no {SAVED_OBJECTS} in deploy/dashboards; pass --dir")


def load_objects(directory: Path | None = None) -> list[dict[str, Any]]:
    path = (directory or default_dir()) / SAVED_OBJECTS
    try:
        objects: list[dict[str, Any]] = json.loads(path.read_text())["objects"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: not a saved objects file: {exc}") from None
    return objects


def to_api(obj: dict[str, Any]) -> dict[str, Any]:
    """One object as ``_bulk_create`` takes it: JSON-text attributes serialised."""
    body = copy.deepcopy(obj)
    attributes = body["attributes"]
    for path in _JSON_TEXT:
        parent = attributes
        for key in path[:-1]:
            parent = parent.get(key, {})
        if path[-1] in parent and not isinstance(parent[path[-1]], str):
            parent[path[-1]] = json.dumps(parent[path[-1]], separators=(",", ":"))
    return {k: body[k] for k in ("type", "id", "attributes", "references") if k in body}


def _request(
    settings: Settings, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    url = settings.dashboards.url.rstrip("/") + path
    headers = {"osd-xsrf": "true", "Content-Type": "application/json"}
    if settings.opensearch.username:
        password = (
            settings.opensearch.password.get_secret_value() if settings.opensearch.password else ""
        )
        token = base64.b64encode(f"{settings.opensearch.username}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read() or b"{}")
        except ValueError:
            detail = {}
        return exc.code, detail


def wait_for_dashboards(settings: Settings, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        try:
            status, _ = _request(settings, "GET", "/api/status")
            if status == 200:
                return
            last = f"HTTP {status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise ServiceUnavailable(
                f"OpenSearch Dashboards at {settings.dashboards.url} was not ready within "
                f"{timeout_s:.0f} s ({last}); is it running (docker compose up)?"
            )
        time.sleep(2)


def import_objects(settings: Settings, objects: list[dict[str, Any]]) -> list[str]:
    """Create or overwrite every object; returns their ``type/id``."""
    status, answer = _request(
        settings,
        "POST",
        "/api/saved_objects/_bulk_create?overwrite=true",
        [to_api(o) for o in objects],
    )
    if status != 200:
        raise DashboardsError(
            f"Dashboards at {settings.dashboards.url} refused the saved objects: HTTP {status} "
            f"{answer.get('message', answer)}"
        )
    failed = [o for o in answer.get("saved_objects", []) if o.get("error")]
    if failed:
        sample = "; ".join(f"{o['type']}/{o['id']}: {o['error'].get('message')}" for o in failed)
        raise DashboardsError(f"Dashboards refused {len(failed)} saved objects: {sample}")
    return [f"{o['type']}/{o['id']}" for o in objects]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboards",
        help="OpenSearch Dashboards saved objects",
        description="Load the shipped index patterns, searches, visualisations and dashboard.",
    )
    which = parser.add_subparsers(dest="dashboards_command", metavar="ACTION", required=True)
    imp = which.add_parser("import", help="create or update the saved objects")
    imp.add_argument("--dir", type=Path, default=None, help="where saved_objects.json lies")
    imp.add_argument(
        "--wait-s",
        type=float,
        default=None,
        help="wait this long for Dashboards (default: setting)",
    )
    imp.set_defaults(func=run_import)


def run_import(args: argparse.Namespace, settings: Settings) -> int:
    objects = load_objects(args.dir)
    wait_for_dashboards(settings, args.wait_s or settings.dashboards.wait_s)
    for name in import_objects(settings, objects):
        print(f"imported {name}")
    return 0
