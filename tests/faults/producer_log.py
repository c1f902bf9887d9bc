"""A log of what the fault workload's producer sees, for reading a failed nemesis run: the
producer itself logs nothing of its retries, so a run that printed "fewer than N
acknowledgements" left no word of why it did not write (no producer id, no leader in its
metadata, a retriable error answered again and again, ...).

``ProducerLog`` samples the producer's I/O-thread state every ``interval_s`` from a thread of
its own -- read without a lock: a dict changing size under the read skips that sample -- and
writes a line to ``path`` whenever the state changed (and every ``quiet_s`` otherwise): the
acknowledged and failed counts, the producer id and its generation, why INIT_PRODUCER_ID
failed, the PRODUCE errors counted since the line before (and the records failed since, by reason), the coordinator and the leaders,
epochs and ISRs of the topic's partitions in the producer's metadata, the batches queued per
partition (with the last retriable error of the first) and its requests in flight (endpoint,
epoch, age). It also sends the client library's log records (WARNING and up; DEBUG of the
sender) to the same file. Test-harness code only: it reads the sender's private state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

SAMPLE_INTERVAL_S = 0.2
QUIET_LINE_S = 2.0  # a line at least this often, changed or not (a stuck producer still shows)


def describe(sender: Any, topic: str, now_ms: int) -> dict:
    """The sender's state as a dict of plain values (see the module doc). Raises RuntimeError
    when a dict of the I/O thread changed size under the read."""
    md = sender.metadata
    t = md.topics.get(topic)
    leaders = {p.partition: (p.leader, p.leader_epoch, tuple(p.isr)) for p in t.partitions} if t else {}
    queued = {}
    for (tname, p), q in list(sender._queues.items()):
        if tname == topic and q:
            head = q[0]
            queued[p] = (len(q), head.sequence, str(head.last_error) if head.last_error is not None else None)
    flights = [(tp[1], f.endpoint, f.leader_epoch, f.batches, now_ms - f.sent_ms) for tp, f in sender._flights.each()
               if tp[0] == topic]
    return {"producer_id": (sender.producer_id, sender.producer_epoch, sender._id_generation),
            "pid_errors": dict(sender.producer_id_errors), "coordinator": md.coordinator,
            "md_version": md.version, "leaders": leaders, "queued": queued,
            "dead": sorted(p for tname, p in list(sender._flights.dead) if tname == topic),
            "flights": flights}


class ProducerLog(threading.Thread):
    """Samples ``workload``'s producer (a ``workload_checker.Workload``, started) into ``path``
    until ``stop``."""

    def __init__(self, workload: Any, topic: str, path: Path) -> None:
        super().__init__(name="producer-log", daemon=True)
        self.workload, self.topic, self.path = workload, topic, path
        self._halt = threading.Event()
        self._handler = logging.FileHandler(path)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        self._handler.setLevel(logging.DEBUG)

    def run(self) -> None:
        client, sender_log = logging.getLogger("fabric.client"), logging.getLogger("fabric.client.sender")
        client.addHandler(self._handler)
        if client.level == logging.NOTSET or client.level > logging.WARNING:
            client.setLevel(logging.WARNING)
        sender_log.setLevel(logging.DEBUG)
        sender = self.workload.producer.sender
        last_state: dict | None = None
        last_errors: Counter[str] = Counter()
        last_line = 0.0
        failures_seen = 0
        while not self._halt.wait(SAMPLE_INTERVAL_S):
            try:
                state = describe(sender, self.topic, sender.clock.now_ms())
                errors = Counter(sender.errors)
                failures = list(self.workload.failed.values())
            except RuntimeError:  # changed under the read: the next sample
                continue
            new_errors = errors - last_errors
            new_failures = Counter(failures[failures_seen:])
            failures_seen = len(failures)
            now = time.time()
            ages = state.pop("flights")
            if state != last_state or new_errors or new_failures or now - last_line >= QUIET_LINE_S:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f",{int(now * 1000) % 1000:03d}"  # as the node logs
                line = (f"{stamp} sample acked={len(self.workload.acked)} failed={len(self.workload.failed)} "
                        f"sent={len(self.workload.sent)} errors+={dict(new_errors)} {state} flights={ages}"
                        + (f" failed+={dict(new_failures)}" if new_failures else ""))
                self._handler.acquire()
                try:
                    self._handler.stream.write(line + "\n")
                    self._handler.stream.flush()
                finally:
                    self._handler.release()
                last_line = now
            last_state, last_errors = state, errors
        client.removeHandler(self._handler)
        self._handler.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
