"""``loom produce TOPIC`` and ``loom consume TOPIC`` (Kafka console producer/consumer).

produce: one record per stdin line (the newline is not part of the value). With
``--key-separator SEP`` the text before the first SEP is the key (lines without it get a
null key). ``--print-offsets`` prints one JSON line per acknowledged record, in input order:
``{"topic", "partition", "offset", "key"}``.

consume: ``--format json`` prints one JSON object per record: ``topic, partition, offset,
timestamp_ms, key, value, headers``; a key, value or header value that is not UTF-8 is given
in base64 with ``"key_encoding"`` / ``"value_encoding": "base64"`` next to it. ``text``
prints the raw value (``--print-key`` puts the key and ``--key-separator`` in front).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from typing import Any, BinaryIO, Iterator

import click
from rich.console import Console

from fabric.client import Consumer, Producer
from fabric.config import load_config
from fabric.errors import ClientTimeoutError, FabricError, TopicNotInMetadataError
from fabric.records import Record
from nodes.cli_common import Target, bootstrap_alone, target_options

PENDING_RECORDS_MAX = 10_000   # unacknowledged records produce keeps before it waits
POLL_RECORDS_MAX = 10_000
POLL_WAIT_MS_MAX = 500
PRODUCE_MAX_BLOCK_MS = 10_000
PRODUCE_DELIVERY_TIMEOUT_MS = 60_000
PRODUCE_REQUEST_TIMEOUT_MS = 30_000  # at most this, never more than the delivery timeout
FLUSH_GRACE_S = 5.0  # beyond the delivery timeout: the last request's answer or its expiry
INTERRUPT_FLUSH_TIMEOUT_S = 5.0  # after Ctrl-C, how long produce waits for what it already read
TOPIC_LOOKUP_TIMEOUT_MS = 5_000


def encode_bytes(data: bytes | str | None) -> tuple[str | None, bool]:
    """(text, is_base64): UTF-8 text when ``data`` decodes, else base64."""
    if data is None or isinstance(data, str):
        return data, False
    try:
        return bytes(data).decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True


def _put(out: dict, field: str, data: bytes | str | None) -> None:
    text, b64 = encode_bytes(data)
    out[field] = text
    if b64:
        out[f"{field}_encoding"] = "base64"


def record_json(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {"topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp_ms": r.timestamp_ms}
    _put(out, "key", r.key)
    _put(out, "value", r.value)
    headers = []
    for name, value in r.headers or ():
        h: dict[str, Any] = {"name": name.decode("utf-8", "replace") if isinstance(name, bytes) else name}
        _put(h, "value", value)
        headers.append(h)
    out["headers"] = headers
    return out


def parse_headers(items: tuple[str, ...]) -> list[list] | None:
    headers = []
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected name=value, not {item!r}", param_hint="--header")
        headers.append([name, value.encode()])
    return headers or None


def _check_partition(target: Target, topic: str, partition: int | None) -> None:
    """Fail fast, with one line, on an unknown topic or partition (instead of blocking)."""
    with target.admin() as admin:
        t = admin.metadata().topics.get(topic)
    if t is None:
        raise TopicNotInMetadataError(f"no topic {topic!r}")
    if partition is not None and not 0 <= partition < len(t.partitions):
        raise TopicNotInMetadataError(f"{topic} has no partition {partition} (it has {len(t.partitions)})")


def _record_limit(config: str | None, bootstrap: str | None) -> dict[str, Any]:
    """The largest record ``loom produce`` sends: the cluster config's
    ``limits.message_bytes_max``, as the producer service (REST, WebSocket) takes -- a config
    that raised it had the gateway take records this command refused. With --bootstrap alone
    no config is read: the client's default."""
    if bootstrap_alone(config, bootstrap):
        return {}
    return {"record_bytes_max": load_config(config).limits.message_bytes_max,
            "record_bytes_max_setting": "limits.message_bytes_max of the cluster config"}


# -- produce ---------------------------------------------------------------------------------
@click.command()
@target_options
@click.argument("topic")
@click.option("--key-separator", default=None, help="split each line into key SEP value (no SEP: null key)")
@click.option("--acks", type=click.Choice(["0", "1", "all"]), default="all", show_default=True,
              help="0: sent; 1: the leader has it; all: every in-sync replica has it")
@click.option("--partition", type=click.IntRange(0), default=None, help="write every record to this partition")
@click.option("--header", "headers", multiple=True, metavar="K=V", help="header for every record, repeatable")
@click.option("--print-offsets", is_flag=True, help="print one JSON line per acknowledged record")
@click.option("--compression", type=click.Choice(["none", "zstd", "lz4"]), default="none", show_default=True,
              help="of each batch sent")
@click.option("--delivery-timeout-ms", type=click.IntRange(1), default=PRODUCE_DELIVERY_TIMEOUT_MS, show_default=True,
              help="how long a record is retried (not_enough_replicas, not_leader...) before its error is reported")
def produce(config: str | None, bootstrap: str | None, topic: str, key_separator: str | None, acks: str,
            partition: int | None, headers: tuple[str, ...], print_offsets: bool, compression: str,
            delivery_timeout_ms: int) -> None:
    """Write stdin lines as records to TOPIC.

    Every acknowledged record's line is printed (--print-offsets), in input order, even when a
    record fails; then the first error is reported and the exit status is non-zero."""
    header_list = parse_headers(headers)
    if key_separator == "":
        raise click.BadParameter("must not be empty (leave it out for records without keys)", param_hint="--key-separator")
    _signals_as_interrupt()
    target = Target(config, bootstrap)
    _check_partition(target, topic, partition)
    sep = key_separator.encode() if key_separator else None
    producer = Producer(bootstrap, config_path=config, acks=acks, compression=compression,
                        max_block_ms=PRODUCE_MAX_BLOCK_MS, delivery_timeout_ms=delivery_timeout_ms,
                        request_timeout_ms=min(PRODUCE_REQUEST_TIMEOUT_MS, delivery_timeout_ms),
                        **_record_limit(config, bootstrap))
    flush_timeout_s = delivery_timeout_ms / 1000 + FLUSH_GRACE_S
    pending: deque = deque()
    report = _Acknowledgements(print_offsets, acks, flush_timeout_s)
    progress = _Progress("produced")
    count = 0
    typed = sys.stdin.isatty()
    try:
        try:
            for line in _lines(sys.stdin.buffer):
                key, value = (None, line)
                if sep is not None and sep in line:
                    key, value = line.split(sep, 1)
                with _signals_held():  # a record queued is one whose answer is reported
                    pending.append((producer.send(topic, value, key=key, headers=header_list, partition=partition), key))
                count += 1
                if typed:  # a person typing: answer this line now, not once the next one is read
                    _flush(producer, flush_timeout_s)
                while pending and (pending[0][0].done() or len(pending) > PENDING_RECORDS_MAX):
                    report.take(pending)
                progress.update(count)
        except FabricError as e:  # this line cannot be sent: stop reading, report what landed
            report.fail(e)
        _flush(producer, flush_timeout_s)
        while pending:
            report.take(pending)
    except KeyboardInterrupt:
        # Ctrl-C ends the input. The lines already read are still delivered (close() flushes
        # them anyway), so report their offsets as promised instead of dropping the answers.
        _flush(producer, INTERRUPT_FLUSH_TIMEOUT_S)
        while pending and pending[0][0].done():
            report.take(pending)
        sys.stdout.flush()
        raise
    finally:
        progress.stop()
        producer.close(timeout=5)
    report.raise_first_error()
    if sys.stderr.isatty():
        click.echo(f"produced {count} records to {topic}", err=True)


def _flush(producer: Producer, timeout_s: float) -> None:
    """Wait for the acknowledgements; a record still unanswered is reported by ``take``."""
    try:
        producer.flush(timeout_s)
    except ClientTimeoutError:
        pass  # each record still unanswered is reported, in order, by _Acknowledgements.take


class _Acknowledgements:
    """Per record, in input order: print its line when acknowledged (``--print-offsets``),
    remember the first error. Not thread-safe: the produce command's own."""

    def __init__(self, print_offsets: bool, acks: str, wait_s: float) -> None:
        self.wait_s = wait_s  # for one record's answer (the sender ends it by its delivery timeout)
        self.print_offsets = print_offsets
        self.acks = acks
        self.first_error: Exception | None = None

    def take(self, pending: deque) -> None:
        """Wait for the first pending record's answer, then report it. SIGINT and SIGTERM are
        held from taking it off ``pending`` until its line is printed; the wait may be cut
        short (the record stays pending)."""
        try:
            pending[0][0].exception(self.wait_s)
        except ClientTimeoutError:
            pass  # not answered within the delivery timeout: reported so by _report
        with _signals_held():
            self._report(*pending.popleft())

    def _report(self, future: Any, key: bytes | None) -> None:
        if not future.done():
            self.fail(ClientTimeoutError("no acknowledgement within the delivery timeout"))
            return
        error = future.exception()
        if error is not None:
            self.fail(error)
            return
        if self.print_offsets:
            md = future.result()
            out = {"topic": md.topic, "partition": md.partition, "offset": md.offset if self.acks != "0" else -1}
            _put(out, "key", key)
            _write_line(json.dumps(out).encode())

    def fail(self, error: Exception) -> None:
        if self.first_error is None:
            self.first_error = error

    def raise_first_error(self) -> None:
        """After every acknowledged line: the first error (one line via LoomGroup)."""
        if self.first_error is not None:
            sys.stdout.flush()
            raise self.first_error


def _lines(stream: BinaryIO):  # noqa: ANN202 - a generator of bytes
    for raw in stream:
        yield raw[:-2] if raw.endswith(b"\r\n") else raw[:-1] if raw.endswith(b"\n") else raw


class _Progress:
    """A record counter on stderr, only when stderr is a terminal."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.status = Console(file=sys.stderr).status(f"{verb} 0 records") if sys.stderr.isatty() else None
        self.last_s = 0.0
        if self.status:
            self.status.start()

    def update(self, count: int) -> None:
        now = time.monotonic()
        if self.status and now - self.last_s > 0.2:
            self.last_s = now
            self.status.update(f"{self.verb} {count} records")

    def stop(self) -> None:
        if self.status:
            self.status.stop()


def _write_line(data: bytes) -> None:
    sys.stdout.buffer.write(data + b"\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, ended as Ctrl-C ends a command (what was read is delivered, a group consumer
    commits what was printed and leaves); the exit status is 143."""


# SIGINT and SIGTERM held back while a step that must not be cut in two runs (``_signals_held``):
# a record's line written and counted, a poll's records taken in hand, a record queued or
# answered and its line printed. Raised between the two halves, they left a printed line out of
# "Processed a total of N messages", committed records never printed, or dropped an
# acknowledged record's line. ``pending``: the exception a held signal raises at the step's end.
_HELD: dict[str, Any] = {"held": False, "pending": None}


def _signals_as_interrupt() -> None:
    """From now on SIGTERM raises ``Terminated`` and SIGINT ``KeyboardInterrupt`` in the main
    thread (a service manager's or ``kill PID``'s stop is a clean stop, not a death that drops
    what was read or printed), each held while ``_signals_held``; a second signal while one is
    held raises at once (a step that blocks -- a poll during a rebalance, a send waiting for
    buffer space -- can always be cut short). A SIGINT ignored when the command started (a
    background job of a non-interactive shell) stays ignored."""
    def stop(signum: int, frame: Any) -> None:
        raised = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        if _HELD["held"] and _HELD["pending"] is None:
            _HELD["pending"] = raised  # raised once the step is done
            return
        raise raised()
    signal.signal(signal.SIGTERM, stop)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, stop)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    _HELD["held"] = True
    try:
        yield
    finally:
        _HELD["held"] = False
        raised, _HELD["pending"] = _HELD["pending"], None
        if raised is not None:
            raise raised()


# -- consume ---------------------------------------------------------------------------------
@click.command()
@target_options
@click.argument("topic")
@click.option("--group", default=None, help="consume as a member of this consumer group")
@click.option("--from-beginning", is_flag=True, help="start at the earliest offset (default: the end)")
@click.option("--partition", type=click.IntRange(0), default=None, help="read only this partition")
@click.option("--offset", default=None, help="earliest, latest or an offset (needs --partition)")
@click.option("--max-messages", type=click.IntRange(1), default=None, help="exit after this many records")
@click.option("--timeout-ms", type=click.IntRange(1), default=None, help="exit when no record arrived for this long")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: one value per line; json: one object per record (key, value, offset...)")
@click.option("--print-key", is_flag=True, help="text format: print the key before the value")
@click.option("--key-separator", default="\t", show_default=r"\t", help="text format: between key and value")
def consume(config: str | None, bootstrap: str | None, topic: str, group: str | None, from_beginning: bool,
            partition: int | None, offset: str | None, max_messages: int | None, timeout_ms: int | None,
            fmt: str, print_key: bool, key_separator: str) -> None:
    """Print records of TOPIC as they arrive."""
    if offset is not None and partition is None:
        raise click.UsageError("--offset needs --partition")
    if group is not None and (partition is not None or offset is not None):
        raise click.UsageError("--group cannot be combined with --partition or --offset")
    if offset is not None and offset not in ("earliest", "latest") and not offset.isdigit():
        # before any network call; a negative offset would silently become auto_offset_reset
        raise click.BadParameter(f"expected earliest, latest or an offset >= 0, not {offset!r}", param_hint="--offset")
    _signals_as_interrupt()
    target = Target(config, bootstrap)
    _check_partition(target, topic, partition)
    reset = "earliest" if from_beginning else "latest"
    lines: _Lines | None = None
    try:
        # a stop while the consumer is made is raised once ``lines`` holds it, to be closed below
        # (between its making and the ``try``, its group member never left, nothing was committed)
        with _signals_held():
            consumer = _group_consumer(target, group, topic, reset) if group else _assigned_consumer(
                target, topic, partition, offset, reset)
            lines = _Lines(consumer, fmt, print_key, key_separator)
        _consume_loop(lines, max_messages, timeout_ms)
    except BrokenPipeError:  # `loom consume … | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        if lines is not None:  # else it was not made (its maker closed what it had made)
            try:
                lines.give_back()  # a stop between two lines: close() commits what was printed, no more
            finally:
                lines.consumer.close()
                click.echo(f"Processed a total of {lines.count} messages", err=True)


class _Lines:
    """The records of ``consume``'s polls, printed one line each and counted as printed, and
    the records of the last poll not printed (given back before a group consumer's close
    commits its positions). SIGINT and SIGTERM are held while a line is written and counted and
    while a poll runs (its positions move past records before it returns them), so that a stop
    never lands between the two halves of either. Not thread-safe: the consume command's own."""

    def __init__(self, consumer: Any, fmt: str, print_key: bool, key_separator: str) -> None:
        self.consumer = consumer
        self.fmt, self.print_key, self.key_separator = fmt, print_key, key_separator
        self.count = 0  # lines printed
        self._polled: list[Record] = []  # the last poll's records
        self._polled_from = 0  # self.count when they came

    def poll(self, wait_ms: int, max_records: int) -> list[Record]:
        with _signals_held():
            self._polled = self.consumer.poll(wait_ms, max_records=max_records)
            self._polled_from = self.count
        return self._polled

    def print(self, r: Record) -> None:
        line = _format_record(r, self.fmt, self.print_key, self.key_separator)
        with _signals_held():
            _write_line(line)
            self.count += 1

    def give_back(self) -> None:
        """Move each partition back to the first record of the last poll not printed
        (``Consumer.give_back``: not over a position moved since that poll took them -- a topic
        deleted and made again; a seek put the old topic's offset back, and close committed it)."""
        left = self._polled[self.count - self._polled_from:]
        if left:
            self.consumer.give_back(((r.topic, r.partition), r.offset) for r in left)


def _consume_loop(lines: _Lines, max_messages: int | None, timeout_ms: int | None) -> None:
    count = 0
    last_record_s = time.monotonic()
    while max_messages is None or count < max_messages:
        wait_ms = POLL_WAIT_MS_MAX
        if timeout_ms is not None:
            left_ms = timeout_ms - (time.monotonic() - last_record_s) * 1000
            if left_ms <= 0:
                break
            wait_ms = max(1, min(wait_ms, int(left_ms)))
        want = POLL_RECORDS_MAX if max_messages is None else min(POLL_RECORDS_MAX, max_messages - count)
        records = lines.poll(wait_ms, want)
        for r in records:
            lines.print(r)
        if records:
            count += len(records)
            last_record_s = time.monotonic()
            sys.stdout.flush()


def _format_record(r: Record, fmt: str, print_key: bool, key_separator: str) -> bytes:
    if fmt == "json":
        return json.dumps(record_json(r), ensure_ascii=False).encode()
    if not print_key:
        return bytes(r.value)
    key = b"null" if r.key is None else bytes(r.key)
    return key + key_separator.encode() + bytes(r.value)


def _assigned_consumer(target: Target, topic: str, partition: int | None, offset: str | None, reset: str) -> Consumer:
    consumer = Consumer(target.bootstrap, config_path=target.config, auto_offset_reset=reset)
    try:
        parts = consumer.partitions_for(topic, TOPIC_LOOKUP_TIMEOUT_MS) if partition is None else [partition]
        tps = [(topic, p) for p in parts]
        consumer.assign(tps)
        if offset is None:
            consumer.seek_to_beginning(tps) if reset == "earliest" else consumer.seek_to_end(tps)
        elif offset in ("earliest", "latest"):
            consumer.seek_to_beginning(tps) if offset == "earliest" else consumer.seek_to_end(tps)
        else:
            try:
                consumer.seek(tps[0], int(offset))
            except ValueError:
                raise click.BadParameter(f"expected earliest, latest or an offset, not {offset!r}", param_hint="--offset") from None
    except BaseException:
        consumer.close()
        raise
    return consumer


def _group_consumer(target: Target, group: str, topic: str, reset: str) -> Any:
    """A GroupConsumer subscribed to ``topic`` (auto-commit; ``close`` commits what was printed)."""
    from fabric.client.group import GroupConsumer  # lazy: keeps `loom produce` start-up light
    consumer = GroupConsumer(target.bootstrap, config_path=target.config, group_id=group, auto_offset_reset=reset)
    try:
        consumer.subscribe([topic])
    except BaseException:  # a second stop is raised at once, even while the first is held
        consumer.close()
        raise
    return consumer


COMMANDS = [produce, consume]
