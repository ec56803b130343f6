"""Who may read the audit trail, what they see, and the record of every read.

DESIGN, Security. Four roles:

=========== ===================================================================
auditor     reads everything, writes nothing
analyst     reads events and alerts, with ``access.sensitive_fields`` masked
pipeline    writes the pipeline's indices; no read, no delete
retention   deletes expired indices; no read
=========== ===================================================================

Production clusters enforce these with the OpenSearch security plugin
(``deploy/opensearch/security/``). The CLI applies the same rules itself before
a query runs; where no plugin authenticates the caller, the identity is only
asserted (``access.user`` or the login name, ``access.role``) and the checks are
advisory, which the command says. Every read through the CLI is recorded as an
access event on the pipeline's own input topic (:func:`record_read`), so reads
of the trail appear in the trail.
"""

from __future__ import annotations

import fnmatch
import getpass
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_exc

from pipeline.errors import AuditstreamError, TransportError
from pipeline.settings import Settings

Role = Literal["auditor", "analyst", "pipeline", "retention"]
ROLES: tuple[Role, ...] = ("auditor", "analyst", "pipeline", "retention")
READ_ROLES: frozenset[str] = frozenset({"auditor", "analyst"})
#: security-plugin role names (``deploy/opensearch/security/roles.yml``)
PLUGIN_ROLES: dict[str, Role] = {f"auditstream_{role}": role for role in ROLES}
MASK = "[masked]"
USER_AGENT = "auditstream-cli"
AUTHINFO = "/_plugins/_security/authinfo"


class AccessDenied(AuditstreamError):
    """The caller's role does not allow this read (or its identity could not be established)."""


@dataclass(frozen=True)
class Identity:
    """Who is reading, in which role, and how we know."""

    user: str
    role: Role
    authenticated: bool  # True only when OpenSearch's security plugin vouched for the user
    enforced: bool  # True when a security plugin enforces the roles server-side

    @property
    def how(self) -> str:
        return "authenticated" if self.authenticated else "asserted"


# -- identity ------------------------------------------------------------------------


def resolve_identity(
    client: OpenSearch, settings: Settings, *, user: str | None = None, role: str | None = None
) -> Identity:
    """The caller: authenticated by the security plugin when there is one, else asserted."""
    try:
        info: dict[str, Any] = client.transport.perform_request("GET", AUTHINFO)
    except os_exc.ConnectionError as exc:
        raise TransportError(f"OpenSearch at {settings.opensearch.url}: {exc}") from exc
    except os_exc.TransportError as exc:
        if exc.status_code in (401, 403):
            raise AccessDenied(
                f"OpenSearch at {settings.opensearch.url} did not authenticate "
                f"{settings.opensearch.username or 'the caller'} ({exc.status_code}); check "
                "AUDITSTREAM_OPENSEARCH__USERNAME and __PASSWORD"
            ) from exc
        info = {}  # no security plugin: this endpoint does not exist
    if info.get("user_name"):
        return _authenticated(info, role)
    asserted = role or settings.access.role
    if asserted not in ROLES:
        raise AccessDenied(f"unknown role {asserted!r}; one of {', '.join(ROLES)}")
    name = user or settings.access.user or getpass.getuser()
    return Identity(user=name, role=asserted, authenticated=False, enforced=False)  # type: ignore[arg-type]


def _authenticated(info: Mapping[str, Any], wanted: str | None) -> Identity:
    held = [PLUGIN_ROLES[r] for r in info.get("roles", []) if r in PLUGIN_ROLES]
    if wanted is not None:
        if wanted not in held:
            raise AccessDenied(
                f"{info['user_name']} does not hold role {wanted} (holds: "
                f"{', '.join(held) or 'no auditstream role'})"
            )
        chosen: Role = wanted  # type: ignore[assignment]
    else:
        # the most restrictive reading role first: an analyst who is also an auditor
        # must ask for --role auditor to see unmasked data
        order: tuple[Role, ...] = ("analyst", "auditor", "retention", "pipeline")
        chosen = next((r for r in order if r in held), "pipeline")
        if not held:
            raise AccessDenied(f"{info['user_name']} holds no auditstream role")
    return Identity(user=str(info["user_name"]), role=chosen, authenticated=True, enforced=True)


def authorize_read(identity: Identity) -> None:
    if identity.role not in READ_ROLES:
        raise AccessDenied(
            f"role {identity.role} may not read the audit trail (readers: auditor, analyst)"
        )


def advisory_note(identity: Identity, url: str) -> str | None:
    """What to tell the caller when the roles are not enforced by the cluster."""
    if identity.enforced:
        return None
    return (
        f"note: access checks are advisory: no security plugin on {url} enforces roles; "
        f"identity {identity.user!r} (role {identity.role}) is asserted, not authenticated"
    )


# -- masking --------------------------------------------------------------------------


def masked_patterns(identity: Identity, settings: Settings) -> list[str]:
    """The ECS field patterns (``fnmatch``) this caller sees masked."""
    return list(settings.access.sensitive_fields) if identity.role == "analyst" else []


@cache
def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether a dotted path matches one of ``patterns``, decided once per path.

    An export masks every field of millions of documents whose paths come from
    one strict mapping: one regex for all the patterns, and a memo of the paths,
    instead of an ``fnmatch`` per field and pattern.
    """
    if not patterns:
        return lambda _path: False
    regex = re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))
    decided: dict[str, bool] = {}

    def matches(path: str) -> bool:
        hit = decided.get(path)
        if hit is None:
            hit = decided[path] = regex.match(path) is not None
        return hit

    return matches


def is_masked(path: str, patterns: Iterable[str]) -> bool:
    return _matcher(tuple(patterns))(path)


def mask(doc: Mapping[str, Any], patterns: list[str], prefix: str = "") -> dict[str, Any]:
    """A copy of ``doc`` with every leaf whose dotted path matches a pattern replaced."""
    return _mask(doc, _matcher(tuple(patterns)), prefix)


def _mask(doc: Mapping[str, Any], matches: Callable[[str], bool], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if matches(path):
            out[key] = [MASK] * len(value) if isinstance(value, list) else MASK
        elif isinstance(value, Mapping):
            out[key] = _mask(value, matches, path + ".")
        else:
            out[key] = value
    return out


_FIELD_REF = re.compile(r"([A-Za-z0-9_@.*?\\]+)\s*:")


def sensitive_references(query: str, patterns: list[str]) -> list[str]:
    """Sensitive fields a Lucene query or DSL text names (a field query could reveal a value)."""
    if not patterns:
        return []
    named = {m.group(1).replace("\\", "") for m in _FIELD_REF.finditer(query)}
    named |= set(re.findall(r'"([A-Za-z0-9_@.*]+)"', query))  # DSL keys and field values
    found = set()
    for field in named:
        for pattern in patterns:
            if fnmatch.fnmatchcase(field, pattern) or fnmatch.fnmatchcase(pattern, field):
                found.add(pattern)
    return sorted(found)


# -- the record of every read -------------------------------------------------------------


@dataclass(frozen=True)
class Read:
    """One read of the trail, as it will be recorded."""

    command: Literal["search", "timeline", "export"]
    indices: str
    query: str
    returned: int
    outcome: Literal["success", "failure"]
    reason: str | None = None
    output: str = "table"


def read_event(identity: Identity, read: Read, *, now: datetime | None = None) -> dict[str, Any]:
    """The access event recording ``read`` by ``identity`` (an ``access-events`` record)."""
    return {
        "event_id": str(uuid.uuid4()),
        "schema_version": 1,
        "occurred_at": now or datetime.now(UTC),
        "actor": {"id": identity.user, "type": "user", "name": identity.user, "tenant": None},
        "action": "read",
        "outcome": read.outcome,
        "reason": read.reason,
        "resource": {"type": "audit_trail", "id": read.indices, "name": read.command},
        "source": {"ip": None, "port": None, "user_agent": USER_AGENT},
        "service": {"name": "auditstream", "host": socket.gethostname(), "environment": None},
        "session_id": None,
        "request_id": None,
        "auth": {"method": "opensearch" if identity.authenticated else "asserted", "mfa": None},
        "attributes": {
            "command": read.command,
            "query": read.query[:4000],
            "documents_returned": str(read.returned),
            "role": identity.role,
            "authenticated": "true" if identity.authenticated else "false",
            "enforced": "true" if identity.enforced else "false",
            "output": read.output,
        },
    }


Sender = Callable[[dict[str, Any]], None]


def kafka_sender(settings: Settings) -> Sender:
    """Send one access event to the input topic and wait until Kafka has it."""

    def send(event: dict[str, Any]) -> None:
        from pipeline.producer import AuditProducer

        # One event, then gone: an idempotent producer first waits about half a second
        # for its producer id, which every search would pay. A retried send could repeat
        # the event; the worker's dedupe drops a repeat of an event_id, so it costs nothing.
        config = {"enable.idempotence": False, "linger.ms": 0}
        with AuditProducer(settings, config=config) as producer:
            producer.send(event)

    return send


def record_read(
    settings: Settings, identity: Identity, read: Read, *, send: Sender | None = None
) -> dict[str, Any]:
    """Record ``read`` as an access event on the input topic; raises if Kafka did not take it."""
    event = read_event(identity, read)
    try:
        (send or kafka_sender(settings))(event)
    except AuditstreamError as exc:
        raise AuditstreamError(
            f"this read could not be recorded in the audit trail ({exc}); every read must be: "
            f"is Kafka at {settings.kafka.bootstrap_servers} reachable?"
        ) from exc
    return event
