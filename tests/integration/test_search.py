"""``auditstream search`` and ``timeline`` on the real stack: completeness, masking, the record."""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.access import AccessDenied
from pipeline.codec import Decoder
from pipeline.schemas import ACCESS_EVENT, default_store
from pipeline.search import run_search, run_timeline
from pipeline.search.query import QueryError
from pipeline.settings import Settings
from tests.integration.processes import read_topic
from tests.integration.search_docs import alert_doc, event_doc, index_docs, with_prefixes

STORE = default_store()
USERS = ["u001", "u002", "u003"]
ACTIONS = ["login", "read", "write", "delete"]
IPS = ["10.1.0.5", "10.1.0.77", "81.2.69.160", "89.160.20.14"]
SECRET_NAME = "ada.secret@example.com"
SECRET_AGENT = "SecretAgent/7.0"


def _args(**overrides: Any) -> argparse.Namespace:
    base: dict[str, Any] = {
        "query": None,
        "dsl": None,
        "since": None,
        "until": None,
        "format": "table",
        "fields": None,
        "limit": None,
        "page_size": 1000,
        "as_user": "it-reader",
        "role": "auditor",
        "user": [],
        "ip": [],
        "action": [],
        "outcome": [],
        "alerts": False,
        "order": None,
    }
    base.update(overrides)
    return argparse.Namespace(**base)


def _corpus(settings: Settings, n: int, now: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    rng = random.Random(8)
    docs = []
    for i in range(n):
        user = USERS[i % len(USERS)]
        docs.append(
            event_doc(
                settings,
                occurred_at=now - timedelta(minutes=3 * i + 1),
                partition=i % 3,
                offset=i,
                actor={"id": user, "type": "user", "name": SECRET_NAME, "tenant": "acme"},
                action=ACTIONS[rng.randrange(len(ACTIONS))],
                outcome="failure" if i % 7 == 0 else "success",
                reason="invalid_password" if i % 7 == 0 else None,
                source={"ip": IPS[i % len(IPS)], "port": 40000 + i, "user_agent": SECRET_AGENT},
            )
        )
    return docs


@pytest.fixture
def indexed(pipeline_settings: Settings) -> tuple[Settings, list[dict[str, Any]], datetime]:
    settings = with_prefixes(pipeline_settings)
    now = datetime.now(UTC).replace(microsecond=0)
    docs = _corpus(settings, 400, now)
    alerts = [
        alert_doc(settings, first_seen=now - timedelta(hours=h), user="u001") for h in (1, 5, 9)
    ]
    index_docs(settings, docs + alerts)
    return settings, [d for _, _, d in docs] + [d for _, _, d in alerts], now


def _access_events(settings: Settings, expected: int) -> list[dict[str, Any]]:
    decoder = Decoder(STORE, STORE.latest(ACCESS_EVENT))
    messages = read_topic(settings, settings.topics.input, expected, timeout=30)
    return [decoder.decode(m.value()).record for m in messages]


class _GrowingOutput(io.StringIO):
    """Indexes more documents into the searched indices right after the first line is written."""

    def __init__(self, settings: Settings, extra: list[tuple[str, str, dict[str, Any]]]) -> None:
        super().__init__()
        self.settings, self.extra, self.done = settings, extra, False

    def write(self, text: str) -> int:
        written = super().write(text)
        if not self.done:
            self.done = True
            index_docs(self.settings, self.extra)  # refreshed: visible to any new search
        return written


def test_export_returns_each_document_once_while_new_ones_arrive_and_is_recorded(
    indexed: tuple[Settings, list[dict[str, Any]], datetime],
) -> None:
    settings, docs, now = indexed
    events = {d["event"]["id"] for d in docs if d["event"]["kind"] == "event"}
    newcomers = _corpus(settings, 150, now + timedelta(seconds=30))
    out = _GrowingOutput(settings, newcomers)
    # 50 a page: 8 pages, while 150 new documents land in the same indices after the first
    assert run_search(_args(format="json", page_size=50), settings, out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    ids = [d["event"]["id"] for d in lines]
    assert len(ids) == len(set(ids)) == len(events)
    assert set(ids) == events  # the snapshot when the export began, each exactly once
    assert [d["@timestamp"] for d in lines] == sorted(d["@timestamp"] for d in lines)
    assert lines[0]["user"]["name"] == SECRET_NAME  # auditors see everything

    (recorded,) = _access_events(settings, 1)
    assert recorded["action"] == "read" and recorded["outcome"] == "success"
    assert recorded["actor"]["id"] == "it-reader"
    assert recorded["resource"]["type"] == "audit_trail"
    assert recorded["auth"]["method"] == "asserted"
    attrs = recorded["attributes"]
    assert attrs["command"] == "export" and attrs["documents_returned"] == str(len(events))
    assert attrs["authenticated"] == "false" and attrs["role"] == "auditor"

    # the export is complete now that the new documents are in: a second read sees them all
    again = io.StringIO()
    assert run_search(_args(format="csv", page_size=200), settings, again) == 0
    rows = list(csv.DictReader(io.StringIO(again.getvalue())))
    assert len(rows) == len(events) + len(newcomers)
    assert len(_access_events(settings, 2)) == 2  # exactly one access event per read


class _IdCounter(io.StringIO):
    """Keeps each exported line's event id only; calls ``on_first`` once the export writes."""

    def __init__(self, on_first: Any) -> None:
        super().__init__()
        self.ids: list[str] = []
        self._partial = ""
        self._on_first = on_first

    def write(self, text: str) -> int:
        if self._on_first is not None:
            self._on_first, start = None, self._on_first
            start()
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        self.ids += [json.loads(line)["event"]["id"] for line in lines if line]
        return len(text)


def test_an_export_of_100000_documents_is_complete_while_new_events_keep_arriving(
    pipeline_settings: Settings,
) -> None:
    import threading

    settings = with_prefixes(pipeline_settings)
    now = datetime.now(UTC).replace(microsecond=0)
    n = 100_000
    docs = [
        event_doc(settings, occurred_at=now - timedelta(seconds=i + 60), partition=i % 3, offset=i)
        for i in range(n)
    ]
    index_docs(settings, docs)
    arrived: list[int] = []
    stop = threading.Event()

    def keep_arriving() -> None:  # 200 new events a round, refreshed, until the export ends
        while not stop.is_set():
            first = n + 200 * len(arrived)
            batch = [
                event_doc(settings, occurred_at=now - timedelta(seconds=j % 60), offset=j)
                for j in range(first, first + 200)
            ]
            index_docs(settings, batch)
            arrived.append(len(batch))

    feeder = threading.Thread(target=keep_arriving, daemon=True)
    out = _IdCounter(on_first=feeder.start)  # the export's point in time is open by then
    try:
        assert run_search(_args(format="json", page_size=1000), settings, out) == 0
    finally:
        stop.set()
        feeder.join(60)
    assert sum(arrived) >= 200, "no event arrived during the export"
    assert len(out.ids) == len(set(out.ids)) == n
    assert set(out.ids) == {doc_id for _, doc_id, _ in docs}


def test_filters_select_exactly_the_matching_documents(
    indexed: tuple[Settings, list[dict[str, Any]], datetime],
) -> None:
    settings, docs, now = indexed
    events = [d for d in docs if d["event"]["kind"] == "event"]
    since = now - timedelta(hours=10)

    def ids(**kw: Any) -> set[str]:
        out = io.StringIO()
        assert run_search(_args(format="json", **kw), settings, out) == 0
        return {json.loads(line)["event"]["id"] for line in out.getvalue().splitlines()}

    def expect(pred: Any) -> set[str]:
        return {d["event"]["id"] for d in events if pred(d)}

    assert ids(user=["u002"], outcome=["failure"]) == expect(
        lambda d: d["user"]["id"] == "u002" and d["event"]["outcome"] == "failure"
    )
    assert ids(ip=["10.1.0.0/16"], action=["read", "delete"]) == expect(
        lambda d: (
            d["source"]["ip"].startswith("10.1.") and d["event"]["action"] in ("read", "delete")
        )
    )
    window = ids(since=since.isoformat(), until=(now - timedelta(hours=2)).isoformat())
    assert window == expect(
        lambda d: (
            since.isoformat()
            <= d["@timestamp"][:19] + "+00:00"
            < (now - timedelta(hours=2)).isoformat()
        )
    )
    assert window
    assert ids(query="event.action:login AND user.id:u003") == expect(
        lambda d: d["event"]["action"] == "login" and d["user"]["id"] == "u003"
    )
    dsl = json.dumps({"query": {"term": {"event.reason": "invalid_password"}}})
    assert ids(dsl=dsl) == expect(lambda d: d["event"].get("reason") == "invalid_password")
    # the default table shows the newest first, at most 100
    table = io.StringIO()
    assert run_search(_args(), settings, table) == 0
    rows = table.getvalue().splitlines()
    assert rows[0].split()[:2] == ["@timestamp", "user.id"] and len(rows) == 101
    assert len(_access_events(settings, 6)) == 6


def test_an_analyst_sees_sensitive_fields_masked_in_every_format(
    indexed: tuple[Settings, list[dict[str, Any]], datetime],
) -> None:
    settings, _, _ = indexed
    outputs = {}
    for fmt in ("table", "json", "csv"):
        out = io.StringIO()
        fields = (
            "@timestamp,user.id,user.name,source.ip,user_agent.original" if fmt != "json" else None
        )
        assert (
            run_search(
                _args(role="analyst", format=fmt, fields=fields, user=["u001"]), settings, out
            )
            == 0
        )
        outputs[fmt] = out.getvalue()
    for fmt, text in outputs.items():
        for secret in (SECRET_NAME, SECRET_AGENT, *IPS):
            assert secret not in text, (fmt, secret)
        assert "[masked]" in text, fmt
        assert "u001" in text, fmt  # user.id is not sensitive
    first = json.loads(outputs["json"].splitlines()[0])
    assert first["user"] == {"id": "u001", "name": "[masked]"}
    assert first["source"]["ip"] == "[masked]" and first["source"]["port"] > 0

    # an analyst may not search by a masked field, nor free-text across it
    with pytest.raises(AccessDenied, match=r"source\.ip"):
        run_search(_args(role="analyst", query="source.ip:10.1.0.5"), settings, io.StringIO())
    with pytest.raises(AccessDenied, match=r"source\.ip"):
        run_search(_args(role="analyst", ip=["10.1.0.5"]), settings, io.StringIO())
    hidden = io.StringIO()
    assert run_search(_args(role="analyst", query='"SecretAgent"'), settings, hidden) == 0
    assert hidden.getvalue().count("\n") == 1  # header only: user_agent.original is not searched
    # the pipeline and retention roles do not read at all
    for role in ("pipeline", "retention"):
        with pytest.raises(AccessDenied, match=f"role {role} may not read"):
            run_search(_args(role=role), settings, io.StringIO())

    recorded = _access_events(settings, 8)
    assert len(recorded) == 8
    denied = [r for r in recorded if r["outcome"] == "failure"]
    assert len(denied) == 4 and {r["reason"] for r in denied} == {"access_denied"}
    assert {r["attributes"]["role"] for r in denied} == {"analyst", "pipeline", "retention"}


def test_a_malformed_query_is_a_clear_error_and_still_recorded(
    indexed: tuple[Settings, list[dict[str, Any]], datetime],
) -> None:
    settings, _, _ = indexed
    with pytest.raises(QueryError, match="the query is malformed") as lucene:
        run_search(_args(query="event.action:(login OR"), settings, io.StringIO())
    assert "Cannot parse 'event.action:(login OR'" in str(lucene.value)
    assert "\n" not in str(lucene.value) and "Exception" not in str(lucene.value)
    with pytest.raises(QueryError, match=r"malformed") as dsl:
        run_search(_args(dsl='{"trem": {"event.action": "x"}}'), settings, io.StringIO())
    assert "trem" in str(dsl.value)
    with pytest.raises(QueryError, match="not valid JSON"):
        run_search(_args(dsl="{nope"), settings, io.StringIO())
    with pytest.raises(QueryError, match="--since"):
        run_search(_args(since="yesterday-ish"), settings, io.StringIO())
    recorded = _access_events(settings, 4)
    assert [r["reason"] for r in recorded] == ["malformed_query"] * 4


def test_timeline_shows_one_actor_in_order_with_alerts_interleaved(
    indexed: tuple[Settings, list[dict[str, Any]], datetime],
) -> None:
    settings, docs, now = indexed
    out = io.StringIO()
    args = _args(format="json", user="u001", since="12h")
    assert run_timeline(args, settings, out) == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    cutoff = (now - timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%S")
    expected = {
        d["event"]["id"]
        for d in docs
        if d.get("user", {}).get("id") == "u001" and d["@timestamp"][:19] >= cutoff
    }
    assert {d["event"]["id"] for d in lines} == expected
    kinds = [d["event"]["kind"] for d in lines]
    assert kinds.count("alert") == 3 and kinds[0] == "event" and kinds[-1] == "event"
    assert [d["@timestamp"] for d in lines] == sorted(d["@timestamp"] for d in lines)
    table = io.StringIO()
    assert run_timeline(_args(user="u001", since="12h", limit=0), settings, table) == 0
    assert table.getvalue().count("ALERT brute_force (high)") == 3
    (_, second) = _access_events(settings, 2)
    assert second["attributes"]["command"] == "timeline"
    assert json.loads(second["attributes"]["query"])["user"] == ["u001"]
