"""Search without services: queries from the command line, masking, outputs, the read record."""

from __future__ import annotations

import argparse
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opensearchpy import exceptions as os_exc

from pipeline import access, search
from pipeline.access import AccessDenied, Identity, Read
from pipeline.errors import AuditstreamError
from pipeline.search.export import _explanation, reason
from pipeline.search.output import make_writer
from pipeline.search.query import (
    Filters,
    QueryError,
    build_query,
    multi_field_clauses,
    parse_dsl,
    parse_when,
)
from pipeline.settings import Settings

NOW = datetime(2025, 6, 15, 12, tzinfo=UTC)
ANALYST = Identity("bob", "analyst", authenticated=False, enforced=False)
AUDITOR = Identity("ann", "auditor", authenticated=True, enforced=True)
DOC: dict[str, Any] = {
    "@timestamp": "2025-06-15T11:00:00.000000Z",
    "event": {"id": "e1", "kind": "event", "action": "login", "outcome": "failure"},
    "user": {"id": "u1", "name": "ada@example.com"},
    "source": {"ip": "10.0.0.1", "port": 443},
    "user_agent": {"original": "Mozilla/5.0"},
    "labels": {"team": "x"},
}


def test_times_are_iso_or_a_span_back_from_now() -> None:
    assert parse_when("24h", NOW) == NOW - timedelta(hours=24)
    assert parse_when("7d", NOW) == NOW - timedelta(days=7)
    assert parse_when("2025-03-01", NOW) == datetime(2025, 3, 1, tzinfo=UTC)
    assert parse_when("2025-03-01T12:00:00Z", NOW) == datetime(2025, 3, 1, 12, tzinfo=UTC)
    with pytest.raises(QueryError, match="--until 'soon' is neither"):
        parse_when("soon", NOW, "--until")


def test_filters_become_one_bool_query() -> None:
    query = build_query(
        Filters(
            lucene="event.action:login",
            since=NOW - timedelta(days=1),
            until=NOW,
            users=["u1"],
            ips=["10.0.0.0/8"],
            actions=["login"],
            outcomes=["failure"],
        )
    )["bool"]
    assert query["must"][0]["query_string"]["query"] == "event.action:login"
    assert query["filter"][0] == {
        "range": {
            "@timestamp": {
                "format": "strict_date_optional_time",
                "gte": "2025-06-14T12:00:00.000000Z",
                "lt": "2025-06-15T12:00:00.000000Z",
            }
        }
    }
    assert {"terms": {"user.id": ["u1"]}} in query["filter"][1]["bool"]["should"]
    assert {"terms": {"source.ip": ["10.0.0.0/8"]}} in query["filter"]
    assert build_query(Filters())["bool"]["must"] == [{"match_all": {}}]
    with pytest.raises(QueryError, match="--since must be before --until"):
        build_query(Filters(since=NOW, until=NOW))


def test_dsl_takes_a_clause_or_a_query_and_nothing_else() -> None:
    clause = {"term": {"event.action": "read"}}
    assert parse_dsl(json.dumps(clause)) == clause
    assert parse_dsl(json.dumps({"query": clause})) == clause
    with pytest.raises(QueryError, match="remove aggs"):
        parse_dsl(json.dumps({"query": clause, "aggs": {}}))
    with pytest.raises(QueryError, match="not valid JSON"):
        parse_dsl("{")
    assert multi_field_clauses({"bool": {"must": [{"query_string": {"query": "x"}}]}}) == [
        "query_string"
    ]
    assert multi_field_clauses({"query_string": {"query": "x", "fields": ["event.action"]}}) == []


def test_masking_replaces_every_sensitive_leaf_and_only_those() -> None:
    patterns = [*Settings().access.sensitive_fields, "labels.*"]
    masked = access.mask(DOC, patterns)
    assert masked["user"] == {"id": "u1", "name": "[masked]"}
    assert masked["source"] == {"ip": "[masked]", "port": 443}
    assert masked["user_agent"]["original"] == "[masked]"
    assert masked["labels"] == {"team": "[masked]"}
    assert DOC["user"]["name"] == "ada@example.com"  # the input is left alone
    assert access.masked_patterns(AUDITOR, Settings()) == []
    assert "source.ip" in access.masked_patterns(ANALYST, Settings())


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_every_output_format_shows_what_it_is_given(fmt: str) -> None:
    out = io.StringIO()
    writer = make_writer(fmt, out, None)
    writer.write(access.mask(DOC, Settings().access.sensitive_fields))
    writer.close()
    text = out.getvalue()
    assert "ada@example.com" not in text and "10.0.0.1" not in text
    if fmt == "json":
        assert json.loads(text)["user"]["name"] == "[masked]"
    elif fmt == "csv":
        (row,) = csv.DictReader(io.StringIO(text))
        assert row["user.name"] == "[masked]" and row["event.outcome"] == "failure"
    else:
        header, line = text.splitlines()
        assert header.split()[0] == "@timestamp" and "[masked]" in line


def test_queries_naming_a_masked_field_are_found() -> None:
    hidden = Settings().access.sensitive_fields
    assert access.sensitive_references("source.ip:10.0.0.1 AND x", hidden) == ["source.ip"]
    assert access.sensitive_references('{"term": {"user.name": "a"}}', hidden) == ["user.name"]
    assert access.sensitive_references("user.*:ada", hidden) == [
        "user.email",
        "user.full_name",
        "user.name",
    ]
    assert access.sensitive_references("event.action:login", hidden) == []


def test_only_auditors_and_analysts_read() -> None:
    access.authorize_read(ANALYST)
    access.authorize_read(AUDITOR)
    for role in ("pipeline", "retention"):
        with pytest.raises(AccessDenied, match=f"role {role} may not read"):
            access.authorize_read(Identity("p", role, False, False))  # type: ignore[arg-type]


class _Transport:
    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer

    def perform_request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class _Client:
    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.transport = _Transport(answer)


def test_without_a_security_plugin_the_identity_is_asserted_and_checks_are_advisory() -> None:
    client = _Client(os_exc.RequestError(400, "no handler found for uri", {}))
    who = access.resolve_identity(client, Settings(), user="bob")  # type: ignore[arg-type]
    assert who == Identity("bob", "analyst", authenticated=False, enforced=False)
    note = access.advisory_note(who, "http://x:9200")
    assert note is not None and "advisory" in note and "asserted" in note


def test_with_the_security_plugin_roles_come_from_the_cluster() -> None:
    info = {"user_name": "ann", "roles": ["auditstream_auditor", "own_index"]}
    who = access.resolve_identity(_Client(info), Settings())  # type: ignore[arg-type]
    assert who == AUDITOR and access.advisory_note(who, "u") is None
    with pytest.raises(AccessDenied, match="does not hold role analyst"):
        access.resolve_identity(_Client(info), Settings(), role="analyst")  # type: ignore[arg-type]
    refused = os_exc.AuthenticationException(401, "unauthorized", {})
    with pytest.raises(AccessDenied, match="did not authenticate"):
        access.resolve_identity(_Client(refused), Settings())  # type: ignore[arg-type]


def test_a_read_is_recorded_as_an_access_event_that_validates() -> None:
    from pipeline.stages.validate import validate

    sent: list[dict[str, Any]] = []
    read = Read("export", "audit-events", '{"lucene":"x"}', 1234, "success", output="csv")
    event = access.record_read(Settings(), ANALYST, read, send=sent.append)
    assert sent == [event]
    ms = int(event["occurred_at"].timestamp() * 1000)
    validate(event, record_timestamp_ms=ms, max_future_skew_s=300)
    assert event["actor"]["id"] == "bob" and event["action"] == "read"
    assert event["auth"]["method"] == "asserted"
    assert event["attributes"]["documents_returned"] == "1234"
    assert event["attributes"]["authenticated"] == "false"


def test_an_unrecordable_read_is_an_error() -> None:
    def broken(event: dict[str, Any]) -> None:
        raise AuditstreamError("kafka down")

    with pytest.raises(AuditstreamError, match="could not be recorded"):
        access.record_read(Settings(), ANALYST, Read("search", "a", "q", 0, "success"), send=broken)


def test_opensearch_errors_become_one_readable_line() -> None:
    text = (
        "[idx/uuid] QueryShardException[Failed to parse query [a:(b]]; nested: "
        "ParseException[Cannot parse 'a:(b': Encountered \"<EOF>\" at line 1, column 4.\n"
        "Was expecting one of: ..."
    )
    assert _explanation(text) == "Cannot parse 'a:(b': Encountered \"<EOF>\" at line 1, column 4."
    exc = os_exc.RequestError(
        400,
        "parsing_exception",
        {
            "error": {
                "root_cause": [{"type": "parsing_exception", "reason": "unknown query [trem]"}]
            }
        },
    )
    assert reason(exc) == "unknown query [trem]"
    assert issubclass(QueryError, AuditstreamError)  # the CLI prints it, no traceback


def test_search_and_timeline_are_cli_commands() -> None:
    parser = argparse.ArgumentParser()
    search.register(parser.add_subparsers())
    args = parser.parse_args(
        ["search", "event.action:login", "--csv", "--user", "u1", "--ip", "::1"]
    )
    assert args.func is search.run_search and args.format == "csv" and args.user == ["u1"]
    args = parser.parse_args(["timeline", "--user", "u1", "--json", "--since", "24h"])
    assert args.func is search.run_timeline and args.format == "json"
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "--json", "--csv"])
