"""Reading every matching document once: a point in time and ``search_after``.

A point in time (PIT) freezes the searched indices as they were when it was
opened, so documents indexed during a long export neither appear half-way nor
shift pages; ``search_after`` on a total order (``@timestamp``, then the unique
``event.id``) walks that snapshot page by page with no ``from`` limit. A page
with failed shards stops the export: a silent gap is worse than an error.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_exc

from pipeline.errors import TransportError
from pipeline.search.query import QueryError

log = logging.getLogger(__name__)

KEEP_ALIVE = "2m"
MAX_PAGE = 10_000


def existing(client: OpenSearch, names: list[str]) -> list[str]:
    """The aliases or indices of ``names`` that exist (a fresh cluster has no alerts yet)."""
    found = []
    for name in names:
        try:
            if client.indices.exists(index=name):
                found.append(name)
        except os_exc.ConnectionError as exc:
            raise TransportError(f"OpenSearch: {exc}") from exc
    return found


def validate(client: OpenSearch, indices: list[str], query: dict[str, Any]) -> None:
    """Raise :class:`QueryError` with OpenSearch's explanation when the query is malformed."""
    try:
        result = client.indices.validate_query(
            index=",".join(indices),
            body={"query": query},
            params={"explain": "true", "ignore_unavailable": "true"},
        )
    except os_exc.ConnectionError as exc:
        raise TransportError(f"OpenSearch: {exc}") from exc
    except os_exc.TransportError as exc:
        raise QueryError(f"the query is malformed: {reason(exc)}") from None
    if not result.get("valid", False):
        errors = [e.get("error") for e in result.get("explanations", []) if e.get("error")]
        if errors:
            raise QueryError(f"the query is malformed: {_explanation(errors[0])}")
        # a query that does not even parse: a search says why
        _search(client, {"size": 0, "query": query}, index=",".join(indices))
        raise QueryError("the query is malformed")


def _explanation(text: str) -> str:
    """``[idx/uuid] QueryShardException[…]; nested: ParseException[Cannot parse …`` → the cause."""
    line = text.strip().splitlines()[0] if text.strip() else "invalid"
    if "nested: " in line:
        line = line.rsplit("nested: ", 1)[1]
        line = re.sub(r"^[A-Za-z]+\[", "", line)
    return line.rstrip("]; ").strip() or "invalid"


def reason(exc: os_exc.TransportError) -> str:
    """The most specific reason in an OpenSearch error response."""
    info = exc.info if isinstance(exc.info, dict) else {}
    error = info.get("error")
    if not isinstance(error, dict):
        return _tidy(str(error or exc.error))
    causes = error.get("root_cause") or []
    cause = causes[0] if causes else error
    text = _tidy(str(cause.get("reason") or cause.get("type") or error))
    shards = error.get("failed_shards") or [{}]
    deeper = (shards[0].get("reason") or {}).get("caused_by") or cause.get("caused_by")
    while isinstance(deeper, dict):
        detail = _tidy(str(deeper.get("reason") or ""))
        if detail and detail not in text:
            text = f"{text}: {detail}"
        deeper = deeper.get("caused_by")
    return text


def _tidy(text: str) -> str:
    """Drop Java class prefixes: ``org.opensearch…QueryShardException: Failed…`` → ``Failed…``."""
    while True:
        head, sep, rest = text.partition(": ")
        if sep and "." in head and " " not in head and head.rsplit(".", 1)[-1][:1].isupper():
            text = rest
            continue
        return text


def hits(
    client: OpenSearch,
    indices: list[str],
    query: dict[str, Any],
    *,
    sort: list[dict[str, str]],
    page_size: int = 1000,
    limit: int | None = None,
    on_total: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Every hit of ``query`` over ``indices`` as of now, in ``sort`` order, each once."""
    page_size = max(1, min(page_size, MAX_PAGE))
    try:
        opened = client.create_pit(index=",".join(indices), params={"keep_alive": KEEP_ALIVE})
    except os_exc.ConnectionError as exc:
        raise TransportError(f"OpenSearch: opening a point in time: {exc}") from exc
    except os_exc.TransportError as exc:
        raise TransportError(
            f"OpenSearch refused a point in time on {indices}: {reason(exc)}"
        ) from exc
    pit_id: str = opened["pit_id"]
    try:
        after: list[Any] | None = None
        returned = 0
        while True:
            size = page_size if limit is None else min(page_size, limit - returned)
            if size <= 0:
                return
            body: dict[str, Any] = {
                "size": size,
                "query": query,
                "sort": sort,
                "pit": {"id": pit_id, "keep_alive": KEEP_ALIVE},
                "track_total_hits": after is None,
            }
            if after is not None:
                body["search_after"] = after
            page = _search(client, body)
            pit_id = page.get("pit_id", pit_id)
            if after is None and on_total is not None:
                on_total(int(page["hits"]["total"]["value"]))
            batch = page["hits"]["hits"]
            yield from batch
            returned += len(batch)
            if len(batch) < size:
                return
            after = batch[-1]["sort"]
    finally:
        try:
            client.delete_pit(body={"pit_id": [pit_id]})
        except (os_exc.ConnectionError, os_exc.TransportError) as exc:
            log.warning("could not close point in time (it expires in %s): %s", KEEP_ALIVE, exc)


def _search(client: OpenSearch, body: dict[str, Any], index: str | None = None) -> dict[str, Any]:
    try:
        page: dict[str, Any] = client.search(body=body, index=index)
    except os_exc.ConnectionError as exc:
        raise TransportError(f"OpenSearch: search: {exc}") from exc
    except os_exc.RequestError as exc:
        raise QueryError(f"the query is malformed: {reason(exc)}") from None
    except os_exc.TransportError as exc:
        raise TransportError(f"OpenSearch: search failed: {reason(exc)}") from exc
    shards = page.get("_shards", {})
    if shards.get("failed"):
        failures = shards.get("failures") or [{}]
        raise TransportError(
            f"OpenSearch: {shards['failed']} of {shards.get('total')} shards failed "
            f"({failures[0].get('reason', {}).get('reason', 'unknown')}); the result would be "
            "incomplete, so it is not returned"
        )
    return page
