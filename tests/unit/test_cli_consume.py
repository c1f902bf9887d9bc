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


def test_a_stop_between_two_lines_gives_back_the_records_not_printed_and_commits_the_rest() -> None:
    """``loom consume --group`` on a real GroupConsumer: the last poll returned 10..19, a stop
    came after two of its lines; the records not printed go back (``Consumer.give_back``) and
    the close commits 12, exactly what was printed."""
    from fabric.client.group import GroupConsumer
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
    assert [r.offset for r in lines.poll(100, 10)] == list(range(10, 20))
    lines.count = 12  # 10 and 11 printed, then the stop
    lines.give_back()
    assert consumer.position(T0) == 12
    consumer.close()
    assert coordinator.committed.get(T0) == 12
