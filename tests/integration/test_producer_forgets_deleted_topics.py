"""A long-lived producer (an application's, the producer service's) forgets the partitions of
topics deleted since it wrote to them, once its metadata no longer has them.

Its I/O thread kept a queue for every partition it had ever produced to, for the producer's
whole life, and every pass (the delivery-timeout check, the choice of what to send) walked all
of them: under topics created and deleted by name, memory and the cost of each pass grew
without end -- the producer service held three queues more for every 3-partition topic the
gateway had produced to."""

from __future__ import annotations

import pytest

from fabric.client import Admin, Producer
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(60)

TOPICS = 10


def test_a_producer_forgets_the_partitions_of_deleted_topics(cluster_factory) -> None:
    c = cluster_factory(1)
    with Admin(c.bootstrap) as admin, Producer(c.bootstrap, acks="all") as producer:
        admin.create_topic("kept", partitions=1, replication_factor=1)
        c.wait_topic_ready(admin, "kept")
        gone = [f"gone-{i}" for i in range(TOPICS)]
        for name in gone:
            admin.create_topic(name, partitions=1, replication_factor=1)
            c.wait_topic_ready(admin, name)
            producer.send(name, b"v").result(20)
        for name in gone:
            admin.delete_topic(name)
        admin.create_topic("later", partitions=1, replication_factor=1)
        c.wait_topic_ready(admin, "later")
        producer.send("later", b"v").result(20)  # a topic it does not know: fresh metadata
        producer.send("kept", b"v").result(20)
        queued = producer.sender._queues  # the I/O thread's per-partition queues
        wait_until(lambda: not {tp[0] for tp in list(queued)} & set(gone), 10,
                   what=f"the producer to forget the deleted topics' partitions (it holds {sorted(queued)})")
