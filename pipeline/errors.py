"""Errors raised by Auditstream.

The hierarchy splits what is retried from what is a bad record::

    AuditstreamError
    ├── ConfigError            bad settings, command line or schema file: fix and restart
    ├── TransportError         Kafka, OpenSearch or the object store failed: retried with backoff
    │   └── ServiceUnavailable a service did not answer in time
    ├── RecordError            one record is bad: it goes to the dead-letter topic, nothing stops
    │   ├── DecodeError        bytes that are not an event in a known encoding
    │   └── ValidationError    decodable but with missing or impossible values
    ├── EnrichmentError        one enricher failed on one event: recorded, the event flows
    │                          (defined in pipeline.stages.enrich.base)
    ├── DeliveryError          an output was not durably written: the process must stop
    └── StackError             the local stack could not start, stop or be found
"""

from __future__ import annotations


class AuditstreamError(Exception):
    """Root of every error Auditstream raises on purpose."""


class ConfigError(AuditstreamError):
    """Settings, a command line or a schema file are wrong; the message says what to fix."""


class TransportError(AuditstreamError):
    """A service call failed in a way worth retrying with backoff."""


class ServiceUnavailable(TransportError):
    """A service did not answer within the time allowed."""


class RecordError(AuditstreamError):
    """One record cannot be processed; it is dead-lettered with ``reason``."""

    reason = "invalid_field"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class DecodeError(RecordError):
    """The bytes are not an access event in a known encoding and schema."""

    reason = "undecodable"


class ValidationError(RecordError):
    """The event decoded but a field is missing or impossible."""

    reason = "invalid_field"


class DeliveryError(AuditstreamError):
    """An output could not be written durably; the process stops rather than lose it."""


class StackError(AuditstreamError):
    """The local stack failed to start, stop or answer."""
