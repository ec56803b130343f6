"""The local stack: Kafka, OpenSearch and an S3 store with Object Lock, as local processes.

``LocalStack(settings).up()`` fetches pinned versions into a cache outside the
repository, starts each service detached with its pid file and log under
``settings.stack.state_dir`` and waits until all are healthy.
"""

from pipeline.stack.base import Service, ServiceStatus
from pipeline.stack.manager import LocalStack, local_client_settings

__all__ = ["LocalStack", "Service", "ServiceStatus", "local_client_settings"]
