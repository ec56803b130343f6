"""``auditstream search`` and ``auditstream timeline``: read the trail, masked, and recorded.

Order of work for every read: establish the caller (authenticated by the
security plugin, or asserted), check the role and the query against it, run
the query over a point in time, write each document masked for the caller,
then record the read as an access event on the input topic. A refused or
failed read is recorded too (outcome ``failure``).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from pipeline import access
from pipeline.access import AccessDenied, Identity, Read
from pipeline.errors import AuditstreamError
from pipeline.search import export
from pipeline.search.output import make_writer
from pipeline.search.query import (
    SORT_ASC,
    SORT_DESC,
    Filters,
    QueryError,
    build_query,
    mapped_fields,
    multi_field_clauses,
    parse_dsl,
    parse_when,
)
from pipeline.settings import Settings
from pipeline.sinks.opensearch import ALERTS_TEMPLATE, EVENTS_TEMPLATE, load_template, make_client

TABLE_LIMIT = 100


def register(subparsers: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--since", help="from this time: ISO 8601, or a span back: 15m, 24h, 7d")
    common.add_argument("--until", help="before this time (same forms as --since)")
    fmt = common.add_mutually_exclusive_group()
    fmt.add_argument(
        "--json", dest="format", action="store_const", const="json", help="one document a line"
    )
    fmt.add_argument(
        "--csv", dest="format", action="store_const", const="csv", help="CSV with a header"
    )
    common.set_defaults(format="table")
    common.add_argument("--fields", help="comma-separated columns for the table or CSV (ECS names)")
    common.add_argument(
        "--limit",
        type=int,
        default=None,
        help=f"at most this many documents (default: {TABLE_LIMIT} for the table, all for "
        "--json/--csv; 0 means all)",
    )
    common.add_argument(
        "--page-size", type=int, default=1000, help="documents per page (max 10000)"
    )
    common.add_argument(
        "--as",
        dest="as_user",
        help="asserted identity where OpenSearch authenticates none "
        "(default: access.user or your login)",
    )
    common.add_argument(
        "--role", choices=access.ROLES, help="the role to read in (default: access.role)"
    )

    search = subparsers.add_parser(
        "search",
        parents=[common],
        help="search the audit trail (Lucene or DSL); table, JSON lines or CSV",
        description="Search events (or alerts) with a Lucene query string or --dsl JSON, plus "
        "filters. Every search is recorded as an access event.",
    )
    search.add_argument(
        "query",
        nargs="?",
        help="Lucene query string, e.g. 'event.action:login AND event.outcome:failure'",
    )
    search.add_argument(
        "--dsl", help='a query DSL clause as JSON, e.g. \'{"term": {"event.action": "read"}}\''
    )
    search.add_argument(
        "--user", action="append", default=[], help="user.id (or user.name); repeatable"
    )
    search.add_argument("--ip", action="append", default=[], help="source.ip or CIDR; repeatable")
    search.add_argument("--action", action="append", default=[], help="event.action; repeatable")
    search.add_argument(
        "--outcome", action="append", default=[], choices=["success", "failure", "unknown"]
    )
    search.add_argument(
        "--alerts", action="store_true", help="search the alerts instead of the events"
    )
    search.add_argument(
        "--order",
        choices=["asc", "desc"],
        default=None,
        help="by time (default: desc for the table, asc for exports)",
    )
    search.set_defaults(func=run_search)

    timeline = subparsers.add_parser(
        "timeline",
        parents=[common],
        help="one actor's events in order, with alerts interleaved",
        description="What one actor did, oldest first, with the alerts about them in place.",
    )
    timeline.add_argument("--user", required=True, help="user.id (or user.name)")
    timeline.set_defaults(func=run_timeline)


# -- the commands -------------------------------------------------------------------


def run_search(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    index = (
        settings.opensearch.alerts_index_prefix
        if args.alerts
        else settings.opensearch.events_index_prefix
    )
    command = "search" if args.format == "table" else "export"
    order = args.order or ("desc" if args.format == "table" else "asc")

    def filters(identity: Identity, hidden: list[str]) -> Filters:
        now = datetime.now(UTC)
        if args.query and args.dsl:
            raise QueryError("give a Lucene query or --dsl, not both")
        dsl = parse_dsl(args.dsl) if args.dsl else None
        if hidden:
            _check_analyst_query(args.query or "", args.dsl or "", dsl, args.ip, hidden)
        return Filters(
            lucene=args.query,
            dsl=dsl,
            since=parse_when(args.since, now, "--since") if args.since else None,
            until=parse_when(args.until, now, "--until") if args.until else None,
            users=args.user,
            user_fields=user_fields_for(hidden),
            ips=args.ip,
            actions=args.action,
            outcomes=args.outcome,
            text_fields=text_fields_for(hidden) if hidden else None,
        )

    return _read(
        args, settings, command, [index], filters, SORT_DESC if order == "desc" else SORT_ASC, out
    )


def run_timeline(args: argparse.Namespace, settings: Settings, out: TextIO | None = None) -> int:
    names = [settings.opensearch.events_index_prefix, settings.opensearch.alerts_index_prefix]

    def filters(identity: Identity, hidden: list[str]) -> Filters:
        now = datetime.now(UTC)
        return Filters(
            since=parse_when(args.since, now, "--since") if args.since else None,
            until=parse_when(args.until, now, "--until") if args.until else None,
            users=[args.user],
            user_fields=user_fields_for(hidden),
        )

    return _read(args, settings, "timeline", names, filters, SORT_ASC, out)


def _read(
    args: argparse.Namespace,
    settings: Settings,
    command: Any,
    names: list[str],
    make_filters: Any,
    sort: list[dict[str, str]],
    out: TextIO | None,
) -> int:
    out = out or sys.stdout
    client = make_client(settings.opensearch)
    identity = access.resolve_identity(client, settings, user=args.as_user, role=args.role)
    note = access.advisory_note(identity, settings.opensearch.url)
    if note:
        print(f"auditstream: {note}", file=sys.stderr)
    hidden = access.masked_patterns(identity, settings)
    described = " ".join(names)
    read = Read(
        command=command,
        indices=",".join(names),
        query=described,
        returned=0,
        outcome="failure",
        output=args.format,
    )

    def record(**changes: Any) -> None:
        nonlocal read
        read = _replace(read, **changes)
        access.record_read(settings, identity, read)

    try:
        access.authorize_read(identity)
        filters = make_filters(identity, hidden)
    except AccessDenied as exc:
        record(reason="access_denied", query=_raw_query(args))
        raise exc
    except QueryError:
        record(reason="malformed_query", query=_raw_query(args))
        raise
    read = _replace(read, query=filters.describe())
    query = build_query(filters)
    indices = export.existing(client, names)
    limit = args.limit if args.limit is not None else (TABLE_LIMIT if args.format == "table" else 0)
    returned = 0
    total: list[int] = []
    writer = make_writer(args.format, out, _columns(args.fields), timeline=command == "timeline")
    try:
        if indices:
            export.validate(client, indices, query)
            for hit in export.hits(
                client,
                indices,
                query,
                sort=sort,
                page_size=args.page_size,
                limit=limit or None,
                on_total=total.append,
            ):
                writer.write(access.mask(hit["_source"], hidden))
                returned += 1
        writer.close()
    except QueryError:
        record(reason="malformed_query", returned=returned)
        raise
    except AuditstreamError as exc:
        record(reason=type(exc).__name__, returned=returned)
        raise
    record(outcome="success", returned=returned)
    matched = total[0] if total else 0
    where = ", ".join(indices) if indices else f"{described} (no such index yet)"
    more = f" of {matched}" if matched > returned else ""
    masked = f"; masked for {identity.role}: {', '.join(hidden)}" if hidden else ""
    print(
        f"{returned}{more} documents from {where}; this read was recorded as {identity.user} "
        f"({identity.how}){masked}",
        file=sys.stderr,
    )
    return 0


# -- helpers -------------------------------------------------------------------------


def _replace(read: Read, **changes: Any) -> Read:
    import dataclasses

    return dataclasses.replace(read, **changes)


def _raw_query(args: argparse.Namespace) -> str:
    parts = {
        k: getattr(args, k, None)
        for k in ("query", "dsl", "user", "ip", "action", "outcome", "since", "until")
    }
    return " ".join(f"{k}={v!r}" for k, v in parts.items() if v)


def _columns(fields: str | None) -> list[str] | None:
    if not fields:
        return None
    return [f.strip() for f in fields.split(",") if f.strip()]


def user_fields_for(hidden: list[str]) -> tuple[str, ...]:
    return tuple(f for f in ("user.id", "user.name") if not access.is_masked(f, hidden))


def text_fields_for(hidden: list[str]) -> list[str]:
    """What an analyst's free text searches: every mapped field except the masked ones."""
    fields: set[str] = set()
    for template in (EVENTS_TEMPLATE, ALERTS_TEMPLATE):
        properties = load_template(template)["template"]["mappings"]["properties"]
        fields.update(mapped_fields(properties))
    return sorted(
        f
        for f in fields
        if not access.is_masked(f, hidden) and not access.is_masked(f.rsplit(".", 1)[0], hidden)
    )


def _check_analyst_query(
    lucene: str, dsl_text: str, dsl: Any, ips: list[str], hidden: list[str]
) -> None:
    named = access.sensitive_references(lucene, hidden) + access.sensitive_references(
        dsl_text, hidden
    )
    if ips and access.is_masked("source.ip", hidden):
        named.append("source.ip")
    if named:
        raise AccessDenied(
            f"the query names masked fields ({', '.join(sorted(set(named)))}); an analyst "
            "cannot search by them: ask an auditor"
        )
    unnamed = multi_field_clauses(dsl)
    if unnamed:
        raise AccessDenied(
            f"--dsl {', '.join(unnamed)} searches every field, masked ones included; name its "
            '"fields" or use a Lucene query'
        )
