"""The producer SDK for services: validated, Avro-encoded, durable access events.

    from pipeline.producer import AuditProducer
    with AuditProducer(settings) as producer:
        producer.send(event)      # raises ValidationError for a bad event
    # leaving the block flushes; a failed delivery raises DeliveryError

Events are keyed by actor id (one actor's events stay in order on one
partition) and partitioned with ``murmur2_random``, as a Java client would.
"""

from pipeline.producer.sdk import AuditProducer, DeliveryReport

__all__ = ["AuditProducer", "DeliveryReport"]
