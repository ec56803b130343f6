"""Write the example enrichment sources that match ``auditstream simulate``.

    .venv/bin/python deploy/enrichment/generate.py OUTPUT_DIR

See :mod:`pipeline.stages.enrich.examples`; the demo writes them itself.
"""

import sys
from pathlib import Path

from pipeline.stages.enrich.examples import write_examples

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: generate.py OUTPUT_DIR")
    settings = write_examples(Path(sys.argv[1]))
    print(f"wrote the example enrichment sources to {sys.argv[1]}")
