"""Reading the audit trail: ``auditstream search`` and ``auditstream timeline``.

- :mod:`pipeline.search.query`: the query from the command line (pure);
- :mod:`pipeline.search.export`: every match once, over a point in time;
- :mod:`pipeline.search.output`: table, JSON lines, CSV;
- :mod:`pipeline.search.commands`: identity, role, masking, and the record of the read
  (:mod:`pipeline.access`).
"""

from __future__ import annotations

from pipeline.search.commands import register, run_search, run_timeline

__all__ = ["register", "run_search", "run_timeline"]
