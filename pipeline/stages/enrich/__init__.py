"""Enrich: who the actor is, where the source is, what the client is, how sensitive the resource.

Each enricher (``geoip``, ``directory``, ``useragent``, ``classify``) is a
small class on the :class:`~pipeline.stages.enrich.base.Enricher` base,
configured from :class:`~pipeline.settings.EnrichSettings`;
:class:`~pipeline.stages.enrich.stage.EnrichStage` runs them all.
"""

from pipeline.stages.enrich.base import Enricher, EnrichmentError
from pipeline.stages.enrich.stage import EnrichStage, bench_enrich

__all__ = ["EnrichStage", "Enricher", "EnrichmentError", "bench_enrich"]
