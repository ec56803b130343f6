"""Sinks: Kafka topics → OpenSearch (``opensearch``) and the archive (``archive``).

Each sink implements the small contract in :mod:`pipeline.sinks.base`; the one
loop there consumes, batches, retries and commits for all of them.
"""
