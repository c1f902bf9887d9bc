"""The ``on_complete`` hook of one ``Producer.send_many`` (``Completion``): held by every batch
that took records of the call and by the caller, and called once when the last lets go."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from fabric.client.futures import RecordFutures

log = logging.getLogger(__name__)


class Completion:
    """The ``on_complete`` hook of one ``send_many``: called once, with the call's
    ``RecordFutures``, when every batch holding its records is finished. It counts one hold
    per run of records put into a batch plus one for the caller, released once the futures
    are known, so a batch finishing while later records are still being appended cannot fire
    it early. Thread-safe (one lock per call, not per record)."""

    __slots__ = ("_fn", "_lock", "_holds", "futures")

    def __init__(self, fn: Callable[["RecordFutures"], None]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._holds = 1  # the caller's
        self.futures: RecordFutures | None = None

    def hold(self) -> None:
        """A batch took records of the call."""
        with self._lock:
            self._holds += 1

    def release(self) -> None:
        """A batch finished, or (once) the caller set ``futures``; the last one calls the hook."""
        with self._lock:
            self._holds -= 1
            last = self._holds == 0
        if last:
            try:
                self._fn(self.futures)  # type: ignore[arg-type]
            except Exception:  # the application's hook, as a delivery callback: logged
                log.exception("send_many completion hook failed")
