"""A longer bad-input fuzz of the gateway's REST operations and WebSockets than the unit test's
(tests/unit/test_gateway_bad_input_fuzz.py), run by hand: many seeds, bounded in cases and time.
Prints each failing case with its seed (repeat it with ``--seeds N --first SEED``).

    .venv/bin/python tests/fuzz_gateway.py --seeds 50 --per-op 20 --seconds 120
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.unit.builders_bad_input import rest_cases, ws_commit_frames, ws_produce_frames  # noqa: E402
from tests.unit.builders_gateway_fuzz import fuzz_gateway  # noqa: E402
from tests.unit.fakes import served_wsgi  # noqa: E402
from tests.unit.test_gateway_bad_input_fuzz import (next_commit_answer, problem_of, send,  # noqa: E402
                                                    stream_problems)


class LastError(logging.Handler):
    """The last programmer error the app logged, in one line: its type, message and where."""

    def __init__(self) -> None:
        super().__init__()
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            e = record.exc_info[1]
            tb = e.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
            self.last = f"{type(e).__name__}: {str(e)[:200]} at {where}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first", type=int, default=1)
    ap.add_argument("--per-op", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=120.0, help="stop after this long")
    ap.add_argument("--show", type=int, default=30, help="failing cases printed at most")
    args = ap.parse_args()
    errors = LastError()
    logging.getLogger("loom.gateway.http").addHandler(errors)
    logging.getLogger("loom.gateway.http").propagate = False  # the tracebacks: one line each below
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per WebSocket opened
    deadline = time.monotonic() + args.seconds
    shown = ran = failed = 0

    def report(seed: int, what: str, problem: str | None) -> None:
        nonlocal shown, failed
        if problem and errors.last:
            problem += f"\n    {errors.last}"
        errors.last = ""
        if problem:
            failed += 1
            if shown < args.show:
                shown += 1
                print(f"seed {seed}: {what}\n    {problem}")
    with tempfile.TemporaryDirectory() as tmp:
        app, agent, bugs, gw = fuzz_gateway(Path(tmp))
        client = app.test_client()
        api = app.extensions["loom.api"]
        with served_wsgi(app) as port:
            url = f"ws://127.0.0.1:{port}"
            for seed in range(args.first, args.first + args.seeds):
                if time.monotonic() > deadline:
                    print(f"stopped at seed {seed}: --seconds {args.seconds:g} passed")
                    break
                for op, case in rest_cases(api, random.Random(seed), args.per_op):
                    agent.ensure_instance()
                    status, content_type, body = send(client, case)
                    ran += 1
                    report(seed, f"{op.endpoint}: {case}",
                           problem_of(case, status, content_type, body) or ("the worker was stopped" if bugs else None))
                    bugs.clear()
                for fmt in ("json", "binary"):  # the WebSockets: a stream of each, per seed
                    for problem in stream_problems(f"{url}/ws/produce?topic=t&format={fmt}", gw,
                                                   ws_produce_frames(random.Random(seed), fmt, args.per_op * 3),
                                                   lambda c: c.receive(timeout=10), "offsets"):
                        report(seed, f"/ws/produce ({fmt})", problem)
                for problem in stream_problems(f"{url}/ws/consume?topic=t&group=g", gw,
                                               ws_commit_frames(random.Random(seed), args.per_op * 3),
                                               next_commit_answer, "committed"):
                    report(seed, "/ws/consume", problem)
                ran += args.per_op * 9
                report(seed, "a WebSocket", "the worker was stopped" if bugs else None)
                bugs.clear()
    print(f"{ran} cases (REST requests and WebSocket messages), {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
