"""The enrichment stage: every configured enricher, one event at a time, never failing it.

``EnrichStage.enrich(event)`` returns the EnrichedEvent v2 context fields
(``network_type``, ``geo``, ``as_info``, ``directory``, ``user_agent``,
``classification``) and the list of ``"<enricher>: <message>"`` errors. An
enricher that raises adds nothing to this event; its error is recorded,
counted in ``auditstream_enrichment_errors_total{enricher}`` and logged (at
most once a minute per enricher, with the count since), and the event flows on.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.settings import EnrichSettings, Settings
from pipeline.stages.enrich.base import Enricher, log
from pipeline.stages.enrich.classify import ClassificationEnricher
from pipeline.stages.enrich.directory import DirectoryEnricher
from pipeline.stages.enrich.geoip import GeoIPEnricher
from pipeline.stages.enrich.useragent import UserAgentEnricher
from pipeline.telemetry import ENRICHMENT_ERRORS, EVENTS

MAX_ERROR_LENGTH = 500
LOG_EVERY_S = 60.0


class EnrichStage:
    """The configured enrichers, in order; see the module docstring."""

    def __init__(self, enrichers: Sequence[Enricher]) -> None:
        self.enrichers = tuple(enrichers)
        self._last_logged: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}
        self._ok = EVENTS.labels(stage="enrich", result="ok")
        self._error = EVENTS.labels(stage="enrich", result="error")

    @classmethod
    def from_settings(cls, settings: Settings | EnrichSettings) -> EnrichStage:
        """Build every enricher whose source is configured; a bad source is a ConfigError."""
        section = settings.enrich if isinstance(settings, Settings) else settings
        builders: tuple[Callable[[EnrichSettings], Enricher | None], ...] = (
            GeoIPEnricher.from_settings,
            DirectoryEnricher.from_settings,
            UserAgentEnricher.from_settings,
            ClassificationEnricher.from_settings,
        )
        enrichers: list[Enricher] = []
        try:
            for build in builders:
                built = build(section)
                if built is not None:
                    enrichers.append(built)
        except BaseException:
            for enricher in enrichers:
                enricher.close()
            raise
        log.info("enrichers: %s", ", ".join(e.name for e in enrichers) or "none")
        return cls(enrichers)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.enrichers]

    def enrich(self, event: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """``(context, errors)`` for one decoded access event; never raises for an enricher."""
        context: dict[str, Any] = {}
        errors: list[str] = []
        for enricher in self.enrichers:
            try:
                context.update(enricher.enrich(event))
            except Exception as exc:  # one enricher's failure must not stop the event
                errors.append(self._failed(enricher.name, exc))
        (self._error if errors else self._ok).inc()
        return context, errors

    def close(self) -> None:
        for enricher in self.enrichers:
            enricher.close()

    def __enter__(self) -> EnrichStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _failed(self, name: str, exc: Exception) -> str:
        """Count, log (rate-limited) and describe one enricher failure."""
        message = str(exc) or type(exc).__name__
        error = f"{name}: {message}"[:MAX_ERROR_LENGTH]
        ENRICHMENT_ERRORS.labels(enricher=name).inc()
        now = time.monotonic()
        if now - self._last_logged.get(name, -LOG_EVERY_S) >= LOG_EVERY_S:
            since = self._unlogged.pop(name, 0)
            more = f" ({since} more since the last report)" if since else ""
            log.warning("enricher %s failed; the event flows without it: %s%s", name, exc, more)
            self._last_logged[name] = now
        else:
            self._unlogged[name] = self._unlogged.get(name, 0) + 1
        return error


def bench_enrich(
    n: int = 100_000, settings: EnrichSettings | None = None, *, seed: int = 1
) -> float:
    """Print and return µs per event for the stage over ``n`` simulated events.

    With no ``settings``, every enricher is on with the example sources, written
    to a temporary directory.
    """
    from pipeline.simulate import Simulator

    simulator = Simulator(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [simulator.event(start) for _ in range(min(n, 50_000))]
    random.Random(seed).shuffle(events)
    with tempfile.TemporaryDirectory(prefix="auditstream-bench-") as tmp:
        if settings is None:
            from pipeline.stages.enrich.examples import write_examples

            settings = write_examples(Path(tmp))
        with EnrichStage.from_settings(settings) as stage:
            for event in events:  # warm the caches, as a running worker has them
                stage.enrich(event)
            began = time.perf_counter()
            for i in range(n):
                stage.enrich(events[i % len(events)])
            elapsed = time.perf_counter() - began
            names = ", ".join(stage.names) or "none"
    per_event_us = elapsed / max(n, 1) * 1e6
    print(f"enrich: {per_event_us:.2f} µs/event over {n} events ({names})", file=sys.stdout)
    return per_event_us
