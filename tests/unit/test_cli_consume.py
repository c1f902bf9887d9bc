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
