"""One group member of the group nemesis (``tests/faults/group_nemesis.py``), run as its own
process so that the nemesis can SIGKILL it: it polls, "processes" (records every delivered
record in its journal, flushed before anything is committed) and commits in its mode --

- ``sync``: ``commit()`` of the positions after some polls;
- ``async``: ``commit(asynchronous=True)`` after some polls, the answer journaled by on_commit;
- ``auto``: ``enable_auto_commit`` only.

SIGUSR1 makes the next records' processing outlast ``max_poll_interval_ms`` (then committed).

Journal: one JSON object a line (``ev``: start, assign, revoke, recs, commit, error, stop).
Usage: python -m tests.faults.group_nemesis_member BOOTSTRAP GROUP TOPIC NAME MODE SEED JOURNAL ASSIGNOR BUFFERED_BYTES_MAX
(BUFFERED_BYTES_MAX: the consumer's bound on what it fetches ahead; 0: the library's default)
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time

from fabric.client.group import CommitFailed, Consumer
from fabric.errors import CodedError

SESSION_MS = 3000
HEARTBEAT_MS = 300
AUTO_COMMIT_MS = 300
MAX_POLL_INTERVAL_MS = 4000
STALL_S = MAX_POLL_INTERVAL_MS / 1000 + 1.5  # SIGUSR1: "processing" this long, past max_poll_interval_ms


class Journal:
    def __init__(self, path: str) -> None:
        self.f = open(path, "a", buffering=1)

    def write(self, **event: object) -> None:
        event["t"] = time.time()
        self.f.write(json.dumps(event) + "\n")
        self.f.flush()


def main(argv: list[str]) -> int:
    bootstrap, group, topic, name, mode, seed, journal_path, assignor, buffered_bytes_max = argv
    bound = {"buffered_bytes_max": int(buffered_bytes_max)} if int(buffered_bytes_max) else {}
    rng = random.Random(f"{seed}-{name}-{os.getpid()}")
    j = Journal(journal_path)
    incarnation = f"{name}/{os.getpid()}"
    state = {"assign_seq": 0}
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("now", True))
    # SIGUSR1: the next records take longer to process than max_poll_interval_ms (the heartbeat
    # thread leaves the group meanwhile), and are committed after that
    stall = {"next": False}
    signal.signal(signal.SIGUSR1, lambda *_: stall.__setitem__("next", True))

    def on_assign(tps: list) -> None:
        state["assign_seq"] += 1
        j.write(ev="assign", inc=incarnation, seq=state["assign_seq"], mid=c.member_id, gen=c.generation,
                tps=[list(tp) for tp in tps], positions={f"{t}:{p}": c.positions.get((t, p)) for t, p in tps})

    def on_revoke(tps: list) -> None:
        j.write(ev="revoke", inc=incarnation, seq=state["assign_seq"], mid=c.member_id, gen=c.generation,
                tps=[list(tp) for tp in tps])

    def on_commit(offsets: dict, err: Exception | None) -> None:
        j.write(ev="commit", inc=incarnation, mode="async", mid=c.member_id, gen=c.generation,
                offsets={f"{t}:{p}": o for (t, p), o in offsets.items()}, ok=err is None,
                err=None if err is None else repr(err))

    c = Consumer(bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=(mode == "auto"),
                 auto_commit_interval_ms=AUTO_COMMIT_MS, session_timeout_ms=SESSION_MS,
                 heartbeat_interval_ms=HEARTBEAT_MS, rebalance_timeout_ms=10_000, max_poll_interval_ms=MAX_POLL_INTERVAL_MS, client_id=name, assignor=assignor,
                 on_assign=on_assign, on_revoke=on_revoke, on_commit=on_commit, **bound)
    # every commit this consumer sends -- the application's, the auto-commit's, the one before a
    # revocation -- is journaled before it goes (an unanswered one may still land)
    send_commit = c.commit

    def commit(offsets: dict | None = None, asynchronous: bool = False) -> None:
        shown = offsets if offsets is not None else {tp: pos for tp, pos in c.positions.items() if pos is not None}
        j.write(ev="commit-sent", inc=incarnation, mid=c.member_id, gen=c.generation, asynchronous=asynchronous,
                offsets={f"{t}:{p}": o for (t, p), o in shown.items()})
        send_commit(offsets, asynchronous)
    c.commit = commit  # type: ignore[method-assign]
    j.write(ev="start", inc=incarnation, mode=mode)
    c.subscribe([topic])
    try:
        while not stop["now"]:
            try:
                recs = c.poll(200)
            except CodedError as e:
                j.write(ev="error", inc=incarnation, where="poll", err=repr(e))
                time.sleep(0.1)
                continue
            if recs:
                j.write(ev="recs", inc=incarnation, seq=state["assign_seq"], mid=c.member_id, gen=c.generation,
                        recs=[[r.partition, r.offset, r.value.decode()] for r in recs])
            if rng.random() < 0.2:
                time.sleep(rng.uniform(0, 0.3))  # processing time
            if stall["next"] and recs:
                stall["next"] = False
                j.write(ev="stall", inc=incarnation, seconds=STALL_S)
                time.sleep(STALL_S)
            if mode == "auto" or not recs or rng.random() < 0.3:
                continue
            offsets = {tp: pos for tp, pos in c.positions.items() if pos is not None}
            if mode == "sync":
                try:
                    c.commit(offsets)
                    j.write(ev="commit", inc=incarnation, mode="sync", mid=c.member_id, gen=c.generation,
                            offsets={f"{t}:{p}": o for (t, p), o in offsets.items()}, ok=True, err=None)
                except (CommitFailed, CodedError) as e:
                    j.write(ev="commit", inc=incarnation, mode="sync", mid=c.member_id, gen=c.generation,
                            offsets={f"{t}:{p}": o for (t, p), o in offsets.items()}, ok=False, err=repr(e))
            else:
                try:
                    c.commit(offsets, asynchronous=True)
                except CodedError as e:
                    j.write(ev="error", inc=incarnation, where="async-commit", err=repr(e))
        j.write(ev="stop", inc=incarnation)
    finally:
        c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
