"""Watching the pipeline from outside: the lag exporter, Prometheus rules, dead letters.

- :mod:`pipeline.observability.lag`: committed offsets and high watermarks of the
  pipeline's consumer groups, exported as lag in messages and seconds;
- :mod:`pipeline.observability.rules`: the alert rules, rendered from one template
  (``deploy/prometheus/rules/auditstream.rules.yml.tmpl``);
- :mod:`pipeline.observability.dlq`: ``auditstream dlq list|show|redrive``;
- :mod:`pipeline.observability.commands`: the command-line entry points.
"""
