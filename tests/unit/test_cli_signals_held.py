"""SIGTERM and Ctrl-C (SIGINT) during `loom consume` and `loom produce` end them as Ctrl-C
always did, but never between a record's line written and counted (the count, "Processed a
total of N messages", said one line fewer than were printed), between a consumer's positions
moving past records and the records being in hand (a group consumer's close committed records
never printed), or between a record queued or answered and its line (an acknowledged record's
line went missing from ``--print-offsets``)."""

from __future__ import annotations

import os
import signal
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from fabric.records import Record
from nodes import cli_data
from nodes.cli import main


@pytest.fixture(autouse=True)
def _handlers_restored() -> Iterator[None]:
    """The commands install their handlers in this process: put pytest's back. Ctrl-C starts as
    Python's own handler, as in a terminal (a run in the background of a shell inherits SIGINT
    ignored, which the commands keep ignored)."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for s, handler in before.items():
        signal.signal(s, handler)
    cli_data._HELD.update(held=False, pending=None)


@pytest.mark.parametrize("sig, raised", [(signal.SIGTERM, cli_data.Terminated), (signal.SIGINT, KeyboardInterrupt)],
                         ids=["sigterm", "sigint"])
def test_a_signal_while_a_line_is_written_is_raised_once_it_is_counted(sig: int, raised: type) -> None:
    cli_data._signals_as_interrupt()
    counted = []
    with pytest.raises(raised) as e:
        with cli_data._signals_held():
            os.kill(os.getpid(), sig)  # handled at the next bytecode: held, not raised
            counted.append(1)
    assert counted == [1]
    assert isinstance(e.value, cli_data.Terminated) == (sig == signal.SIGTERM), "Ctrl-C keeps its exit status 130"
    with pytest.raises(raised):  # outside a held line: at once
        os.kill(os.getpid(), sig)
        for _ in range(1000):
            pass
    steps = []
    with pytest.raises(raised):  # a second one while one is held: at once (a blocked step is cut short)
        with cli_data._signals_held():
            os.kill(os.getpid(), sig)
            steps.append(1)
            os.kill(os.getpid(), sig)
            steps.append(2)
    assert steps == [1]


class _GroupConsumer:
    """Stands in for a subscribed GroupConsumer: ``poll`` moves the positions past the records it
    returns; ``close`` commits the positions (auto-commit). ``signal_at``: (poll, line) at which
    SIGINT arrives -- line None: inside the poll, once the positions moved; else while that line
    of the poll is written (the test's ``_write_line``)."""

    def __init__(self, batches: list[list[Record]]) -> None:
        self.batches = batches
        self.polls = 0
        self.positions: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] | None = None
        self.signal_in_poll = False

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        if self.polls == len(self.batches):
            raise AssertionError("polled past the signal")
        records = self.batches[self.polls]
        self.polls += 1
        for r in records:
            self.positions[(r.topic, r.partition)] = r.offset + 1
        if self.signal_in_poll and self.polls == len(self.batches):
            os.kill(os.getpid(), signal.SIGINT)  # the positions moved; the records are not returned yet
        return records

    def give_back(self, offsets: Any) -> None:  # Consumer.give_back's: only back
        for tp, offset in offsets:
            self.positions[tp] = min(self.positions[tp], offset)

    def close(self) -> None:
        self.committed = dict(self.positions)


def _records(partition: int, offsets: range) -> list[Record]:
    return [Record("t", partition, o, 0, None, b"p%d-%d" % (partition, o), []) for o in offsets]


def _consume(monkeypatch: pytest.MonkeyPatch, consumer: _GroupConsumer, signal_at_line: int | None) -> Any:
    written: list[bytes] = []
    real_write = cli_data._write_line

    def write(data: bytes) -> None:
        real_write(data)
        written.append(data)
        if len(written) == signal_at_line:
            os.kill(os.getpid(), signal.SIGINT)  # the line is out; it is not counted yet
    monkeypatch.setattr(cli_data, "_write_line", write)
    monkeypatch.setattr(cli_data, "_check_partition", lambda *a: None)
    monkeypatch.setattr(cli_data, "_group_consumer", lambda *a: consumer)
    return CliRunner().invoke(main, ["consume", "t", "--group", "g", "--bootstrap", "127.0.0.1:9"])


def test_ctrl_c_while_a_line_is_written_counts_it_and_commits_exactly_what_was_printed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = _GroupConsumer([_records(0, range(0, 2)), _records(0, range(2, 4)) + _records(1, range(0, 3))])
    result = _consume(monkeypatch, consumer, signal_at_line=4)  # p0-3 of the second poll
    lines = result.stdout.splitlines()
    assert result.exit_code == 130, result.output
    assert lines == ["p0-0", "p0-1", "p0-2", "p0-3"]
    assert "Processed a total of 4 messages" in result.stderr, result.stderr
    # p0 up to what was printed, p1 (polled, none printed) back where it was: not read
    assert consumer.committed == {("t", 0): 4, ("t", 1): 0}


def test_ctrl_c_inside_a_poll_commits_none_of_its_records(monkeypatch: pytest.MonkeyPatch) -> None:
    consumer = _GroupConsumer([_records(0, range(0, 2)), _records(0, range(2, 5))])
    consumer.signal_in_poll = True
    result = _consume(monkeypatch, consumer, signal_at_line=None)
    assert result.exit_code == 130, result.output
    assert result.stdout.splitlines() == ["p0-0", "p0-1"]
    assert "Processed a total of 2 messages" in result.stderr, result.stderr
    assert consumer.committed == {("t", 0): 2}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_as_the_consumer_is_made_closes_it(monkeypatch: pytest.MonkeyPatch, sig: int) -> None:
    """The stop lands once the consumer exists and before the command holds it in its
    ``try``: it was never closed (its group member did not leave, nothing was committed)."""
    consumer = _GroupConsumer([])

    def made(*a: Any) -> _GroupConsumer:
        os.kill(os.getpid(), sig)  # handled at the next bytecode: the consumer is not handed over yet
        return consumer
    monkeypatch.setattr(cli_data, "_check_partition", lambda *a: None)
    monkeypatch.setattr(cli_data, "_group_consumer", made)
    result = CliRunner().invoke(main, ["consume", "t", "--group", "g", "--bootstrap", "127.0.0.1:9"])
    assert result.exit_code == (130 if sig == signal.SIGINT else 143), result.output
    assert consumer.committed == {}, "the consumer was not closed"
    assert consumer.polls == 0 and "Processed a total of 0 messages" in result.stderr, result.stderr


def test_a_second_signal_while_the_group_consumer_subscribes_closes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second stop is raised at once, even while the first is held: the group consumer made
    and not yet subscribed is closed on the way out."""
    import fabric.client.group as group_module
    made: list[Any] = []

    class Subscribing(_GroupConsumer):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__([])
            made.append(self)

        def subscribe(self, topics: list[str]) -> None:
            raise KeyboardInterrupt  # as the stop handler raises a second signal
    monkeypatch.setattr(group_module, "GroupConsumer", Subscribing)
    with pytest.raises(KeyboardInterrupt):
        cli_data._group_consumer(cli_data.Target(None, "127.0.0.1:9"), "g", "t", "latest")
    assert [c.committed for c in made] == [{}], "the consumer was not closed"


class _Future:
    """An acknowledged record's future (what ``_Acknowledgements`` reads)."""

    def __init__(self, offset: int) -> None:
        self.offset = offset

    def done(self) -> bool:
        return True

    def exception(self, timeout: float | None = None) -> None:
        return None

    def result(self, timeout: float | None = None) -> Any:
        from fabric.client.futures import RecordMetadata
        return RecordMetadata("t", 0, self.offset)


class _Producer:
    """Every record is acknowledged as it is queued. ``signal_at``: the send during which SIGINT
    arrives, once the record is queued (it is delivered: close() flushes it)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        self.sent: list[bytes] = []
        self.signal_at: int | None = None

    def send(self, topic: str, value: bytes, **kw: Any) -> _Future:
        self.sent.append(value)
        if len(self.sent) == self.signal_at:
            os.kill(os.getpid(), signal.SIGINT)
        return _Future(len(self.sent) - 1)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def _produce(monkeypatch: pytest.MonkeyPatch, producer: _Producer, signal_at_line: int | None) -> Any:
    lines = [0]
    real_write = cli_data._write_line

    def write(data: bytes) -> None:
        lines[0] += 1
        if lines[0] == signal_at_line:
            os.kill(os.getpid(), signal.SIGINT)  # the record is answered and taken; its line not out yet
        real_write(data)
    monkeypatch.setattr(cli_data, "_write_line", write)
    monkeypatch.setattr(cli_data, "_check_partition", lambda *a: None)
    monkeypatch.setattr(cli_data, "Producer", lambda *a, **kw: producer)
    return CliRunner().invoke(main, ["produce", "t", "--print-offsets", "--bootstrap", "127.0.0.1:9"],
                              input="a\nb\nc\nd\n")


def _offsets(stdout: str) -> list[int]:
    import json
    return [json.loads(line)["offset"] for line in stdout.splitlines()]


def test_produce_ctrl_c_as_an_acknowledged_line_is_printed_leaves_no_line_out(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = _Producer()
    result = _produce(monkeypatch, producer, signal_at_line=2)
    assert result.exit_code == 130, result.output
    # every record queued before the stop is delivered: each one's line, in order, none left out
    assert _offsets(result.stdout) == list(range(len(producer.sent))) and len(producer.sent) >= 2


def test_produce_ctrl_c_as_a_record_is_queued_reports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    producer = _Producer()
    producer.signal_at = 3
    result = _produce(monkeypatch, producer, signal_at_line=None)
    assert result.exit_code == 130, result.output
    assert producer.sent == [b"a", b"b", b"c"], "the line after the stop was not read"
    assert _offsets(result.stdout) == [0, 1, 2], "the record queued as Ctrl-C came was delivered: its line is printed"
