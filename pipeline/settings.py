"""One settings object for every component, built once and passed down.

Every name, address, threshold and credential comes from here. Values are read
from ``AUDITSTREAM_…`` environment variables (nested with ``__``, e.g.
``AUDITSTREAM_KAFKA__BOOTSTRAP_SERVERS``), then from an optional ``.env`` file.
Secrets are :class:`pydantic.SecretStr` so they are never printed or logged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.errors import ConfigError

DAY_MS = 24 * 3600 * 1000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _default_cache_dir() -> Path:
    """Downloads live outside the repository, readable by the OpenSearch user."""
    if os.geteuid() == 0:
        return Path("/var/cache/auditstream")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "auditstream"


def _data_root() -> Path:
    """Where local data lives; outside /root, which other users cannot enter."""
    if os.geteuid() == 0:
        return Path("/var/lib/auditstream")
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "auditstream"


def _default_state_dir() -> Path:
    return _data_root() / "stack"


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None

    def client_config(self) -> dict[str, Any]:
        """librdkafka properties shared by every confluent-kafka client."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.lower(),
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        for key, value in (
            ("ssl.ca.location", self.ssl_ca_location),
            ("ssl.certificate.location", self.ssl_certificate_location),
            ("ssl.key.location", self.ssl_key_location),
        ):
            if value is not None:
                conf[key] = str(value)
        return conf


class TopicSettings(_Section):
    input: str = "access-events"
    by_ip: str = "access-events-by-ip"
    enriched: str = "access-events-enriched"
    dead_letter: str = "access-events-dlq"
    alerts: str = "access-alerts"
    partitions: int = Field(12, ge=1)
    input_retention_ms: int = Field(7 * DAY_MS, ge=3600 * 1000)
    output_retention_ms: int = Field(14 * DAY_MS, ge=3600 * 1000)
    replication_factor: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _outputs_outlive_input(self) -> TopicSettings:
        if self.output_retention_ms < self.input_retention_ms:
            raise ValueError(
                "topics.output_retention_ms must be at least topics.input_retention_ms "
                f"({self.input_retention_ms}); derived topics must outlive the input"
            )
        return self

    def all(self) -> list[str]:
        return [self.input, self.by_ip, self.enriched, self.dead_letter, self.alerts]

    def outputs(self) -> list[str]:
        return [self.by_ip, self.enriched, self.dead_letter, self.alerts]


class GroupSettings(_Section):
    worker: str = "auditstream-worker"
    sink_opensearch: str = "auditstream-sink-opensearch"
    sink_archive: str = "auditstream-sink-archive"


class CodecSettings(_Section):
    encoding: Literal["single_object", "confluent"] = "single_object"
    schema_registry_url: str | None = None
    registry_retry_s: float = Field(60.0, ge=0)
    schemas_dir: Path | None = None


class OpenSearchSettings(_Section):
    url: str = "http://127.0.0.1:9200"
    username: str | None = None
    password: SecretStr | None = None
    verify_certs: bool = True
    ca_certs: Path | None = None
    events_index_prefix: str = "audit-events"
    alerts_index_prefix: str = "audit-alerts"
    index_granularity: Literal["day", "month"] = "day"
    number_of_shards: int = Field(1, ge=1)
    number_of_replicas: int = Field(0, ge=0)
    timeout_s: float = Field(30.0, gt=0)
    wait_s: float = Field(60.0, gt=0)


class ArchiveSettings(_Section):
    backend: Literal["filesystem", "s3"] = "filesystem"
    path: Path = Field(default_factory=lambda: _data_root() / "archive")
    s3_endpoint: str | None = None
    s3_bucket: str = "auditstream-archive"
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"
    lock_days: int = Field(400, ge=1)
    # Avro block codec of new objects: deflate, which every Avro reader has, or zstandard
    # (smaller and faster; Python < 3.14 needs the `zstd` extra to write and to read it)
    codec: Literal["deflate", "zstandard"] = "deflate"


class SinkSettings(_Section):
    batch_max_records: int = Field(2000, ge=1)
    batch_max_ms: int = Field(1000, ge=1)
    archive_max_records: int = Field(50_000, ge=1)
    archive_max_ms: int = Field(5000, ge=1)
    retry_initial_s: float = Field(0.5, gt=0)
    retry_max_s: float = Field(30.0, gt=0)
    session_timeout_ms: int = Field(10_000, ge=1000)
    instance_id: str | None = None
    metrics_port: int | None = None


class WorkerSettings(_Section):
    data_dir: Path = Field(default_factory=lambda: _data_root() / "worker")
    max_future_skew_s: float = Field(300.0, ge=0)
    max_lateness_s: float = Field(3600.0, ge=0)
    max_unacked_per_partition: int = Field(5000, ge=1)
    session_timeout_s: float = Field(30.0, gt=0)
    metrics_port: int | None = None
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "info"
    status_interval_s: float = Field(5.0, ge=0)  # stderr status line every N s; 0: off


class DedupeSettings(_Section):
    enabled: bool = True
    window_s: float = Field(7 * 24 * 3600.0, gt=0)
    sweep_every: int = Field(1000, ge=1)
    sweep_limit: int = Field(1000, ge=1)


class EnrichSettings(_Section):
    """The enrichment stage; an enricher whose source is not set is off and adds nothing."""

    geoip_city_path: Path | None = None  # GeoLite2-City/-Country or DB-IP city/country .mmdb
    geoip_asn_path: Path | None = None  # GeoLite2-ASN or DB-IP ASN .mmdb
    directory_path: Path | None = None  # identity directory export, .json or .csv
    classification_path: Path | None = None  # resource classification rules, .yaml
    user_agent: bool = True  # parse user agents (needs no file)
    reload_interval_s: float = Field(5.0, gt=0)  # how often source files are checked for changes
    cache_size: int = Field(10_000, ge=1)  # entries per enricher's LRU cache


class DetectSettings(_Section):
    """The detection stage; thresholds live in the rules file (``deploy/detection/rules.yaml``)."""

    enabled: bool = True
    rules_path: Path | None = None  # None: the built-in defaults, the same as the shipped file
    sweep_every: int = Field(1000, ge=1)  # events per partition between expiry sweeps
    sweep_limit: int = Field(1000, ge=1)  # keys scanned per sweep
    cache_entities: int = Field(1024, ge=1)  # decoded states kept per table partition


class RetentionSettings(_Section):
    """How long each tier keeps data (DESIGN, Indices and retention)."""

    events_days: int = Field(90, ge=1)
    alerts_days: int = Field(400, ge=1)
    # `replay`'s audit-restore-* indices: kept this long after their last restore
    restore_days: int = Field(30, ge=1)
    # archive objects go once their newest record is this old and their lock has passed;
    # None: archive.lock_days
    archive_days: int | None = Field(None, ge=1)


class DashboardsSettings(_Section):
    """OpenSearch Dashboards, where ``auditstream dashboards import`` loads the saved objects."""

    url: str = "http://127.0.0.1:5601"
    wait_s: float = Field(120.0, gt=0)


class AccessSettings(_Section):
    """Who reads the trail through the CLI (DESIGN, Security); enforced by the security plugin."""

    user: str | None = None  # asserted identity when OpenSearch does not authenticate one
    role: Literal["auditor", "analyst", "pipeline", "retention"] = "analyst"
    sensitive_fields: list[str] = Field(
        default_factory=lambda: [
            "user.name",
            "user.email",
            "user.full_name",
            "source.ip",
            "user_agent.original",
        ]
    )


class ObservabilitySettings(_Section):
    """The lag exporter (``auditstream lag-exporter``) and what reads lag."""

    lag_exporter_port: int = Field(9403, ge=1, le=65535)
    lag_exporter_addr: str = "0.0.0.0"
    lag_interval_s: float = Field(10.0, gt=0)
    lag_timeout_s: float = Field(10.0, gt=0)


class IntegritySettings(_Section):
    """The digest signer and its periodic verify (DESIGN, Integrity)."""

    signing_key: Path = Field(default_factory=lambda: _data_root() / "keys" / "digest-signing.pem")
    digest_interval_s: float = Field(3600.0, gt=0)
    verify_interval_s: float = Field(3600.0, gt=0)
    metrics_port: int | None = None


class StackSettings(_Section):
    state_dir: Path = Field(default_factory=_default_state_dir)
    cache_dir: Path = Field(default_factory=_default_cache_dir)
    kafka_version: str = "4.4.0"
    log4j_version: str = "2.25.3"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    opensearch_version: str = "2.19.6"
    opensearch_port: int = 9200
    opensearch_transport_port: int = 9300
    opensearch_heap: str = "1g"
    kafka_heap: str = "512m"
    opensearch_user: str = "opensearch"
    java_home: Path = Path("/usr/lib/jvm/java-17-openjdk-amd64")
    versitygw_version: str = "v1.8.0"
    s3_port: int = 7070
    s3_access_key: str = "auditstream"
    s3_secret_key: SecretStr = SecretStr("auditstream-local-secret")
    start_timeout_s: float = Field(120.0, gt=0)


class Settings(BaseSettings):
    """Everything configurable, from ``AUDITSTREAM_…`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="AUDITSTREAM_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
        frozen=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    groups: GroupSettings = GroupSettings()
    codec: CodecSettings = CodecSettings()
    opensearch: OpenSearchSettings = OpenSearchSettings()
    archive: ArchiveSettings = ArchiveSettings()
    sink: SinkSettings = SinkSettings()
    worker: WorkerSettings = WorkerSettings()
    dedupe: DedupeSettings = DedupeSettings()
    enrich: EnrichSettings = EnrichSettings()
    detect: DetectSettings = DetectSettings()
    retention: RetentionSettings = RetentionSettings()
    access: AccessSettings = AccessSettings()
    dashboards: DashboardsSettings = DashboardsSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    integrity: IntegritySettings = IntegritySettings()
    stack: StackSettings = StackSettings()

    @property
    def archive_policy_days(self) -> int:
        """How old an archive object's newest record must be before retention removes it."""
        return self.retention.archive_days or self.archive.lock_days

    @model_validator(mode="after")
    def _archive_outlives_indices(self) -> Settings:
        longest = max(self.retention.events_days, self.retention.alerts_days)
        if self.archive.lock_days < longest:
            raise ValueError(
                f"archive.lock_days ({self.archive.lock_days}) is shorter than the longest "
                f"index retention ({longest} days); the archive must outlive every index"
            )
        if self.archive_policy_days < longest:
            raise ValueError(
                f"retention.archive_days ({self.archive_policy_days}) is shorter than the longest "
                f"index retention ({longest} days); the archive must outlive every index: "
                "raise it or leave it unset (it then follows archive.lock_days)"
            )
        return self


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning pydantic's errors into a message that says what to fix."""
    try:
        return Settings(**overrides)
    except PydanticValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            env = "AUDITSTREAM_" + "__".join(str(p).upper() for p in err["loc"])
            problems.append(f"  {where} ({env}): {err['msg']}")
        raise ConfigError("invalid settings:\n" + "\n".join(problems)) from None


def to_env(settings: Settings) -> dict[str, str]:
    """The ``AUDITSTREAM_…`` variables that rebuild ``settings`` in a child process."""
    env: dict[str, str] = {}
    for section_name in type(settings).model_fields:
        section = getattr(settings, section_name)
        for field in type(section).model_fields:
            value = getattr(section, field)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, list | dict):
                value = json.dumps(value)  # pydantic-settings reads complex values as JSON
            env[f"AUDITSTREAM_{section_name.upper()}__{field.upper()}"] = str(value)
    return env
