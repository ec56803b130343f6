"""``auditstream retention apply --ism``: the shipped Index State Management policies.

For clusters that have the ISM plugin (``deploy/opensearch/ism/``), one policy per
index family: events, alerts and ``replay``'s restore indices. ISM ages an index
from its creation, so each policy waits long enough never to delete earlier than
``auditstream retention apply`` would; it cannot check the archive first.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_exc

from pipeline.errors import TransportError
from pipeline.integrity.replay import restore_prefix
from pipeline.retention import Kind, RetentionError
from pipeline.settings import Settings
from pipeline.sinks.opensearch import templates_dir

ISM_DIR = "ism"
ISM_POLICIES: dict[Kind, str] = {
    "events": "audit-events.policy.json",
    "alerts": "audit-alerts.policy.json",
    "restore": "audit-restore.policy.json",
}


def ism_dir() -> Path:
    return templates_dir() / ISM_DIR


def load_ism_policy(kind: Kind) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((ism_dir() / ISM_POLICIES[kind]).read_text())
    return loaded


def render_ism_policy(
    policy: dict[str, Any], prefix: str, days: int, period_days: int
) -> dict[str, Any]:
    """The shipped policy for ``<prefix>-*``, deleting ``days`` plus one period after creation.

    ISM can only age an index from its creation date, not from the date in its
    name, and an index may be created up to a period before its last instant
    (and a little earlier with clock skew): waiting a whole period plus a day
    longer than the retention guarantees it is never deleted early.
    """
    body = copy.deepcopy(policy)
    inner = body["policy"]
    inner["ism_template"] = [{"index_patterns": [f"{prefix}-*"], "priority": 100 + len(prefix)}]
    for state in inner["states"]:
        for transition in state.get("transitions", []):
            if "min_index_age" in transition.get("conditions", {}):
                transition["conditions"]["min_index_age"] = f"{days + period_days + 1}d"
    return body


def install_ism(client: OpenSearch, settings: Settings) -> list[str]:
    """PUT the ISM policies (update in place when present); returns the policy ids.

    Restore indices age from their creation, which is when ISM counts from:
    their policy waits ``restore_days`` plus a day and no index period.
    """
    installed = []
    events_period = 1 if settings.opensearch.index_granularity == "day" else 31
    for kind, prefix, days, period in (
        (
            "events",
            settings.opensearch.events_index_prefix,
            settings.retention.events_days,
            events_period,
        ),
        ("alerts", settings.opensearch.alerts_index_prefix, settings.retention.alerts_days, 31),
        (
            "restore",
            restore_prefix(settings.opensearch.events_index_prefix),
            settings.retention.restore_days,
            0,
        ),
    ):
        body = render_ism_policy(load_ism_policy(kind), prefix, days, period)  # type: ignore[arg-type]
        policy_id = f"{prefix}-retention"
        path = f"/_plugins/_ism/policies/{policy_id}"
        params: dict[str, Any] = {}
        try:
            try:
                current = client.transport.perform_request("GET", path)
                params = {
                    "if_seq_no": current["_seq_no"],
                    "if_primary_term": current["_primary_term"],
                }
            except os_exc.NotFoundError:
                pass  # a new policy
            client.transport.perform_request("PUT", path, params=params, body=body)
        except os_exc.ConnectionError as exc:
            raise TransportError(f"OpenSearch at {settings.opensearch.url}: {exc}") from exc
        except os_exc.TransportError as exc:
            raise RetentionError(
                f"OpenSearch at {settings.opensearch.url} did not take ISM policy {policy_id} "
                f"({exc.status_code} {exc.error}); is the Index State Management plugin "
                "installed? Without it, run `auditstream retention apply` on a schedule"
            ) from exc
        installed.append(policy_id)
    return installed
