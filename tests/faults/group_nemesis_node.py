"""``python -m nodes.run`` for the group nemesis, with the coordinator's offsets snapshots
due every ``LOOM_NEMESIS_SNAPSHOT_RECORDS`` commit records (default: the production
``SNAPSHOT_COMMIT_RECORDS``), so that snapshots are written -- and loaded from -- while the
nemesis kills and pauses nodes, not only once in a run."""

from __future__ import annotations

import os
import sys

from nodes.coordinator import snapshots as S
from nodes.run import main

if __name__ == "__main__":
    records = int(os.environ.get("LOOM_NEMESIS_SNAPSHOT_RECORDS", "0"))
    if records > 0:
        S.SNAPSHOT_COMMIT_RECORDS = records
    sys.exit(main())
