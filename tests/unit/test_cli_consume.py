"""``loom consume``: flags checked before any network call, and Ctrl-C reports what was printed."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("offset", ["-5", "1.5", "abc"])
def test_consume_rejects_a_bad_offset_at_once(offset: str) -> None:
    from click.testing import CliRunner

    from nodes.cli import main
    # an address where nothing listens: a check made after connecting would time out instead
    result = CliRunner().invoke(main, ["consume", "t", "--partition", "0", "--offset", offset,
                                       "--bootstrap", "127.0.0.1:9"])
    assert result.exit_code == 2 and "--offset" in result.output and offset in result.output, result.output


def test_consume_interrupted_reports_what_it_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from fabric.records import Record
    from nodes import cli_data
    from nodes.cli import main

    class OnePollThenCtrlC:
        polls = 0
        closed = False

        def poll(self, timeout_ms: int, max_records: int) -> list:
            self.polls += 1
            if self.polls > 1:
                raise KeyboardInterrupt
            return [Record("t", 0, i, 0, None, b"v%d" % i, []) for i in range(3)]

        def close(self) -> None:
            self.closed = True

    fake = OnePollThenCtrlC()
    monkeypatch.setattr(cli_data, "_check_partition", lambda *a: None)
    monkeypatch.setattr(cli_data, "_assigned_consumer", lambda *a: fake)
    result = CliRunner().invoke(main, ["consume", "t", "--bootstrap", "127.0.0.1:9"])
    assert result.exit_code == 130 and fake.closed
    assert result.stdout == "v0\nv1\nv2\n" and "Processed a total of 3 messages" in result.stderr


@pytest.mark.parametrize("made_again", [True, False], ids=["topic-made-again", "nothing-moved"])
def test_records_not_printed_go_back_only_where_nothing_moved_the_position_since(made_again: bool) -> None:
    """``loom consume --group``: the last poll returned 10..19 of topic t (id-t), and in its
    reactor pass metadata came naming t by another id (deleted and made again): the partition
    starts again as never read. A stop after two lines sought t-0 back to 12, the old topic's
    offset, over that reset, and the close committed 12 for the new topic: the group's next
    member skipped its records 0..11. The records not printed go back as a poll's give-back
    does: not over a position something moved after the poll took them."""
    from fabric.client.group import GroupConsumer
    from fabric.metadata import ClusterMetadata, TopicInfo
    from nodes import cli_data
    from tests.unit.builders_group_consumer import (T0, BrokerRepliesReactor, OffsetsCoordinator, OnePartitionBroker,
                                                    consumer_config)
    from tests.unit.fakes import ScriptedCoordinatorLink

    broker, coordinator = OnePartitionBroker(), OffsetsCoordinator()
    reactor = BrokerRepliesReactor(broker)
    consumer = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(broker, reactor,
                                                                           ScriptedCoordinatorLink(coordinator)))
    consumer.subscribe(["t"])
    lines = cli_data._Lines(consumer, "text", False, "\t")
    got: list = []
    for _ in range(20):
        got += [r.offset for r in lines.poll(100, 10)]
        if got:
            break
    assert got == list(range(10))
    lines.count = 10  # printed
    if made_again:
        old = broker.metadata
        broker.metadata = ClusterMetadata(old.version + 1, old.cluster_id, old.brokers,
                                          {"t": TopicInfo("t", old.topics["t"].partitions, {}, "id-t2")},
                                          coordinator=old.coordinator)
        reactor.clock.advance(1000)  # past the metadata backoff: the request goes out at once
        consumer._refresh_metadata()  # answered in the next reactor pass: the one inside the next poll's take
    assert [r.offset for r in lines.poll(100, 10)] == list(range(10, 20))
    lines.count = 12  # 10 and 11 printed, then the stop
    lines.give_back()
    if made_again:
        assert consumer.position(T0) is None, "the old topic's offset was put back over the reset"
    else:
        assert consumer.position(T0) == 12
    consumer.close()
    assert coordinator.committed.get(T0) == (None if made_again else 12)
