"""An 18-second fixed-seed run of the produce nemesis (``produce_nemesis.py``, the soak itself is
not part of ``make test``): its faults, healing and every check -- the acknowledged records in
every replica, the readers' records in the final log, no Traceback, no node exited by itself --
end with no violation, so that the soak keeps working as the code under it changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import produce_nemesis
from tests.faults.produce_nemesis_checks import make_plan

pytestmark = pytest.mark.faults
SEED = 39  # one fault at a time (fsync interval): a kill while catching up, every broker killed, a zombie leader
DURATION_S = 18


def test_produce_nemesis_smoke(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert [f.kind for f in make_plan(SEED, DURATION_S).lanes[0][:3]] == ["kill-catching-up", "kill-all-brokers", "pause-leader"]
    code = produce_nemesis.run(SEED, DURATION_S, tmp_path)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "SIGKILL every broker" in out and "SIGSTOP" in out  # the faults happened
