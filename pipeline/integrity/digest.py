"""Signed digests over every chain head (DESIGN, Integrity), by one signer.

A digest is an immutable object ``_digest/<YYYYMMDDTHHMMSSZ>.json`` claimed by
conditional create (and locked, on S3)::

    {"body": {"digest_time": "2026-01-01T10:00:00Z", "heads": [
                {"entry": "_chain/access-events/00003/…json", "entry_sha256": "…",
                 "last_offset": 1499, "last_timestamp": 1700000004000,
                 "partition": 3, "topic": "access-events"}, …],
              "horizons": [{"first_offset": 12000, "key": "_horizon/access-events/00003/…json",
                            "partition": 3, "sha256": "…", "topic": "access-events"}, …],
              "interval_s": 3600, "key_id": "…", "previous_digest": "_digest/…json",
              "previous_signature": "<base64>", "public_key": "<base64 raw Ed25519>",
              "version": 1},
     "signature": "<base64 Ed25519 signature of the canonical JSON of body>"}

Each digest carries its key id and public key (keys rotate; the auditor
decides which keys to trust, by key file or fingerprint) and the previous
digest's signature, so deleting or altering any digest breaks the chain of
digests.

``horizons`` (absent in digests written before archive retention existed) lists
each chain's newest retention horizon (:mod:`pipeline.integrity.horizon`), so a
horizon cannot be altered or removed after a digest signed it. Digests are never
removed by retention: they are small, and each chains to the one before.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipeline.integrity import keys
from pipeline.integrity.chain import (
    CHAIN_PREFIX,
    ChainEntry,
    canonical_json,
    newest_per_partition,
    sha256_hex,
)
from pipeline.integrity.horizon import current_horizons
from pipeline.sinks.storage import ObjectStore

DIGEST_PREFIX = "_digest/"
DIGEST_VERSION = 1
_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_SECOND = timedelta(seconds=1)


def digest_key(when: datetime) -> str:
    return f"{DIGEST_PREFIX}{when.astimezone(UTC).strftime(_TIME_FORMAT)}.json"


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class Digest:
    """A stored digest as parsed (not yet verified)."""

    key: str
    body: dict[str, Any]
    signature: bytes

    @property
    def time(self) -> datetime:
        return parse_iso(str(self.body["digest_time"]))

    @property
    def signed_bytes(self) -> bytes:
        return canonical_json(self.body)

    @property
    def heads(self) -> list[dict[str, Any]]:
        heads: list[dict[str, Any]] = self.body["heads"]
        return heads

    @classmethod
    def from_bytes(cls, key: str, data: bytes) -> Digest:
        """ValueError when it is not a well-formed digest."""
        try:
            raw = json.loads(data)
            body = raw["body"]
            signature = base64.b64decode(raw["signature"], validate=True)
            if not isinstance(body, dict) or body.get("version") != DIGEST_VERSION:
                raise ValueError("not a version-1 digest")
            parse_iso(body["digest_time"])
            for field in ("key_id", "public_key", "heads", "interval_s"):
                body[field]
            if not isinstance(body["heads"], list):
                raise ValueError("heads is not a list")
            if not isinstance(body.get("horizons", []), list):
                raise ValueError("horizons is not a list")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed digest: {exc}") from None
        return cls(key=key, body=body, signature=signature)


def list_digests(store: ObjectStore) -> list[str]:
    return [k for k in store.list(DIGEST_PREFIX) if k.endswith(".json")]


def chain_heads(store: ObjectStore) -> list[dict[str, Any]]:
    """The newest entry of every partition's chain, as a digest lists them."""
    heads = []
    for key in newest_per_partition(store, CHAIN_PREFIX):
        data = store.get(key)
        entry = ChainEntry.from_bytes(data)
        heads.append(
            {
                "topic": entry.topic,
                "partition": entry.partition,
                "entry": key,
                "entry_sha256": sha256_hex(data),
                "last_offset": entry.last_offset,
                "last_timestamp": entry.last_timestamp,
            }
        )
    return heads


class DigestSigner:
    """The one signer: writes a digest over every chain head, chained to the last one."""

    def __init__(self, store: ObjectStore, key: Ed25519PrivateKey, interval_s: float) -> None:
        self.store = store
        self.key = key
        self.interval_s = interval_s

    def sign(self, now: datetime | None = None) -> Digest:
        """Write one digest now (a second later if one already has this second's key)."""
        when = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        previous = self._previous()
        heads = chain_heads(self.store)
        horizons = current_horizons(self.store)
        public = self.key.public_key()
        while True:
            body: dict[str, Any] = {
                "version": DIGEST_VERSION,
                "digest_time": iso(when),
                "interval_s": self.interval_s,
                "key_id": keys.key_id(public),
                "public_key": keys.public_key_to_b64(public),
                "previous_digest": previous.key if previous else None,
                "previous_signature": (
                    base64.b64encode(previous.signature).decode() if previous else None
                ),
                "heads": heads,
                "horizons": horizons,
            }
            signature = self.key.sign(canonical_json(body))
            key = digest_key(when)
            data = canonical_json({"body": body, "signature": base64.b64encode(signature).decode()})
            if previous is not None and key.encode() <= previous.key.encode():
                when = previous.time.replace(microsecond=0) + _SECOND
                continue
            if self.store.put_if_absent(key, data):
                return Digest(key=key, body=body, signature=signature)
            when += _SECOND
            previous = self._previous()

    def _previous(self) -> Digest | None:
        found = list_digests(self.store)
        if not found:
            return None
        return Digest.from_bytes(found[-1], self.store.get(found[-1]))
