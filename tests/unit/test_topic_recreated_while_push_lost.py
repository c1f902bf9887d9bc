"""A topic deleted and created again under the same name while the broker missed both pushes
(PUB drops; it repairs with a snapshot) is a new topic: the broker must take the new
partitions' state (their epochs start again from 0) and must not serve the old topic's log as
the new one's.
"""

from __future__ import annotations

from nodes.coordinator.store import PartitionState, TopicState
from tests.unit.builders_broker import BATCH_MAX, batch, start


def test_recreated_topic_missed_by_pushes_is_taken_as_new(nodes) -> None:  # noqa: ANN001, F811
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    ps = coord.state.topics["t"].partitions[0]
    for _ in range(3):  # some leadership history: the old t-0 is at leader epoch 3
        ps.leader_epoch += 1
        coord.commit()
    loop.run_until_idle()
    old = broker.partitions[("t", 0)]
    assert old.is_leader and old.leader_epoch == 3
    old.append_as_leader([batch(4)], BATCH_MAX)  # records of the old topic
    del coord.state.topics["t"]
    coord.commit()
    coord.state.topics["t"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])], {"min.insync.replicas": 2})
    coord.commit()
    loop.take_pushes()  # both lost
    coord._publish_metadata()  # the version beacon: the broker repairs with a snapshot
    loop.run_until_idle()
    assert broker.metadata.version == coord.state.version
    part = broker.partitions[("t", 0)]
    assert part.is_leader and part.leader_epoch == 0, \
        f"recreated t-0 not taken: broker holds leader epoch {part.leader_epoch}, the coordinator says 0"
    assert part.log_end_offset == 0, "the deleted topic's records are served as the new topic's"
