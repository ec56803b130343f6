import copy
import io
import json
import shutil
from pathlib import Path

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import parse_schema

from pipeline.codec import Decoder, Encoding, encode
from pipeline.errors import ConfigError
from pipeline.schemas import (
    ACCESS_EVENT,
    SchemaStore,
    crc64_avro,
    default_schemas_dir,
    entry_from_schema,
)
from tests.factories import make_event


def test_crc64_matches_the_avro_specification_vectors():
    # From the Avro specification's schema fingerprint test data.
    assert crc64_avro(b'"null"') == 7195948357588979594


def test_every_schema_in_the_index_loads():
    store = SchemaStore.load()
    names = {e.name for e in store.entries}
    assert names == {
        "io.auditstream.AccessEvent",
        "io.auditstream.EnrichedEvent",
        "io.auditstream.Alert",
        "io.auditstream.DeadLetter",
    }
    assert len({e.fingerprint for e in store.entries}) == len(store.entries)


def _copy_schemas(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(default_schemas_dir(), target)
    return target


def test_broken_schema_file_names_the_file_and_problem(tmp_path):
    directory = _copy_schemas(tmp_path)
    (directory / "alert.v1.avsc").write_text('{"type": "record", "name": "Alert", "fields": [')
    with pytest.raises(ConfigError, match=r"alert\.v1\.avsc: not valid JSON"):
        SchemaStore.load(directory)


def test_invalid_avro_names_the_file(tmp_path):
    directory = _copy_schemas(tmp_path)
    (directory / "alert.v1.avsc").write_text(
        json.dumps({"type": "record", "name": "Alert", "fields": [{"name": "x", "type": "nope"}]})
    )
    with pytest.raises(ConfigError, match=r"alert\.v1\.avsc: not a valid Avro schema"):
        SchemaStore.load(directory)


def test_missing_schema_file_names_it(tmp_path):
    directory = _copy_schemas(tmp_path)
    (directory / "dead_letter.v1.avsc").unlink()
    with pytest.raises(ConfigError, match=r"dead_letter\.v1\.avsc: schema file not found"):
        SchemaStore.load(directory)


def _v2_schema() -> dict:
    """Version 1 plus one optional field with a default: a compatible change."""
    raw = json.loads((default_schemas_dir() / "access_event.v1.avsc").read_text())
    v2 = copy.deepcopy(raw)
    v2["fields"].append({"name": "risk_score", "type": ["null", "double"], "default": None})
    return v2


def test_v1_reader_reads_an_event_written_with_an_added_optional_field():
    store = SchemaStore.load()
    v1 = store.latest(ACCESS_EVENT)
    v2 = entry_from_schema(_v2_schema(), schema_id=99, subject="s", version=2, file=Path("v2"))
    store.add(v2)
    event = make_event(risk_score=0.93)
    value = encode(event, v2, Encoding.SINGLE_OBJECT)
    decoded = Decoder(store, v1).decode(value)
    assert "risk_score" not in decoded.record
    assert decoded.record["event_id"] == event["event_id"]


def test_v2_reader_reads_a_v1_event_with_the_default():
    v1 = SchemaStore.load().latest(ACCESS_EVENT)
    v2_parsed = parse_schema(_v2_schema())
    event = make_event()
    buf = io.BytesIO()
    schemaless_writer(buf, v1.parsed, event)
    buf.seek(0)
    record = schemaless_reader(buf, v1.parsed, v2_parsed)
    assert record["risk_score"] is None
    assert record["actor"] == event["actor"]
