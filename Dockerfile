# The Auditstream image: one `auditstream` entry point for every pipeline program
# (worker, sinks, topics, simulate, search, verify ...). docker-compose.yml runs it.
#
#   docker build -t auditstream:local .
#   docker run --rm auditstream:local --help
#
# Every dependency comes as a wheel (confluent-kafka bundles librdkafka, rocksdict
# bundles RocksDB), so neither stage needs a compiler.

FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel is built from (see .dockerignore): pyproject.toml names
# README.md as the readme and force-includes schemas/ into the package.
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY pipeline ./pipeline
# Packaged into the wheel: index templates, example enrichment rules, saved objects.
COPY deploy/opensearch ./deploy/opensearch
COPY deploy/enrichment ./deploy/enrichment
COPY deploy/dashboards ./deploy/dashboards
RUN python -m venv /opt/auditstream \
    && /opt/auditstream/bin/pip install ".[s3,zstd]"


FROM python:3.11-slim

LABEL org.opencontainers.image.title="auditstream" \
      org.opencontainers.image.description="Audit-log pipeline: Kafka -> Faust -> OpenSearch and a tamper-evident archive" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/auditstream/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed, non-root uid/gid so volumes and Kubernetes' runAsNonRoot agree on it.
# The data directories exist in the image, owned by that user, so named volumes
# mounted on them start out writable by it.
RUN groupadd --system --gid 10001 auditstream \
    && useradd --system --uid 10001 --gid auditstream \
        --home-dir /var/lib/auditstream --shell /usr/sbin/nologin auditstream \
    && mkdir -p /var/lib/auditstream/worker /var/lib/auditstream/archive \
    && chown -R auditstream:auditstream /var/lib/auditstream

COPY --from=build /opt/auditstream /opt/auditstream
# Creates the archive bucket with Object Lock (the compose `s3-init` step).
COPY deploy/compose/create_archive_bucket.py /opt/auditstream/share/create_archive_bucket.py

WORKDIR /var/lib/auditstream
USER 10001:10001

ENTRYPOINT ["auditstream"]
CMD ["--help"]
