"""``auditstream stack status --json`` against the session's running stack."""

from __future__ import annotations

import argparse
import json
import time

import pytest

from pipeline.stack import LocalStack
from pipeline.stack.commands import status


def test_status_json_reads_live_versions_addresses_and_data_dirs(
    local_stack: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    began = time.monotonic()
    assert status(argparse.Namespace(json=True), local_stack.settings) == 0
    took = time.monotonic() - began
    document = json.loads(capsys.readouterr().out)
    assert document["healthy"] is True
    stack = local_stack.settings.stack
    expected = {
        "kafka": (stack.kafka_version, f"127.0.0.1:{stack.kafka_port}"),
        "opensearch": (stack.opensearch_version, f"http://127.0.0.1:{stack.opensearch_port}"),
        "s3": (stack.versitygw_version, f"http://127.0.0.1:{stack.s3_port}"),
    }
    for service in document["services"]:
        version, address = expected[service["name"]]
        assert service["state"] == "healthy" and service["pid"], service
        assert service["version"] == version, service  # read from the process, not settings
        assert service["address"] == address
        data_dir = local_stack.service(service["name"]).data_path()
        assert data_dir is not None and data_dir.is_dir()
        assert service["data_dir"] == str(data_dir)
        assert data_dir.is_relative_to(stack.state_dir)
    assert took < 10, f"stack status took {took:.1f} s"
