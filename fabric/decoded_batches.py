"""What a consumer's views keep decoded beside the fetched bytes, and what that takes.

``fabric.records._decode`` decodes a batch cut between two views once, whole, and keeps it in
the ``DecodedBatches`` the views split from one fetch share, for the rest of the batch (each
small poll out of a big batch decoded it again, before). Decoded, small records take several
times their fetched bytes; ``DecodedBatches`` estimates what each batch it keeps takes, and
adds it to a ``HeldBytes`` while a holder asks it to -- a consumer counts it against its
``buffered_bytes_max`` while the rest of the batch is buffered (``fabric.client.consumer``).

Thread-safe where it counts: a view ``poll_batch`` returned may be read on another thread (a
worker's) while the consumer's thread reads or takes the rest of its fetch, and both change
what is counted -- under locks, else a thread switch inside ``+=`` lost an update and the
consumer's count stayed skewed for good (never back to 0: each fetch asked for less). The locks
are a fetch's (``DecodedBatches``: its batches and their bytes) and a consumer's (``HeldBytes``:
its count), never one for a process: a consumer service's many consumers do not wait for each
other. Taken in that order only, once per batch decoded for the rest of a cut and once per
answer leaving or entering a buffer, never per record.
"""

from __future__ import annotations

import threading
from operator import itemgetter
from typing import Any

# what a record unpacked as a (timestamp_ms, key, value, headers) tuple takes beside the bytes of
# its payload, about (the tuple, the timestamp's int, a bytes object per key and value: 137-169
# bytes measured with tracemalloc on CPython 3.11, keyless to keyed) ...
DECODED_RECORD_BYTES = 192
# ... and, when it has headers, their tuple (48 with one header: 40 and 8 a header) and each
# header beside its bytes in the payload (its pair, its slot in that tuple, a str for its name
# and a bytes object for its value: 159 measured for ASCII names, 185-189 for Latin-1 and CJK
# ones). ``DecodedBatches`` estimates a batch it keeps by them (``tuples_bytes``)
DECODED_HEADERS_BYTES = 48
DECODED_HEADER_BYTES = 192

_headers = itemgetter(3)


def tuples_bytes(records: tuple, payload_bytes: int) -> int:
    """What ``records`` ((timestamp_ms, key, value, headers) tuples unpacked from
    ``payload_bytes`` bytes of payload) take, about (``DECODED_RECORD_BYTES``...). Headers are
    counted with C-level calls over the records (no Python per record; the records without
    headers cost one ``filter`` pass), once per batch kept. A headers field that is not an
    array (a payload not as the format says: a string, bytes, a map) is one object, its bytes
    in the payload: counted as one header -- its length is no count of headers (a string of
    50 KB was counted as 50,000 headers, 9.6 MB)."""
    size = payload_bytes + DECODED_RECORD_BYTES * len(records)
    with_headers = list(filter(None, map(_headers, records)))
    if with_headers:
        if set(map(type, with_headers)) == {tuple}:  # arrays (unpacked with use_list=False)
            headers = sum(map(len, with_headers))
        else:  # rare: a Python pass
            headers = sum(len(h) if type(h) is tuple else 1 for h in with_headers)
        size += DECODED_HEADERS_BYTES * len(with_headers) + DECODED_HEADER_BYTES * headers
    return size


class HeldBytes:
    """A count of bytes that several ``DecodedBatches`` add to while they are counted there (a
    consumer's: the decoded batches its buffer holds). Changed by ``add`` only, under its own
    lock (the ``DecodedBatches`` of several fetches, read on several threads, add to it); read
    without it (a value a moment old is an estimate still)."""

    __slots__ = ("bytes", "_lock")

    def __init__(self) -> None:
        self.bytes = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        """Count ``n`` more bytes (fewer if negative)."""
        with self._lock:
            self.bytes += n


class DecodedBatches:
    """Whole batches decoded for the views split from one fetched view (``fabric.records._decode``), by where
    each batch is in the fetched bytes, and what they take beside those bytes (``bytes``,
    estimated per batch: nothing for a fixed batch that reads the fetched bytes in place, the
    payload for one decompressed, ``tuples_bytes`` for tuples: the payload, DECODED_RECORD_BYTES
    a record and what their headers take).
    ``tally``: a ``HeldBytes`` that counts them too, while a holder asks it to
    (``RecordBatchView.count_decoded``). Its counts change under its own lock (the views of one
    fetch may be read on two threads), and the tally's under the tally's, taken inside it; the
    batches kept are a dict's, whose get, set and pop are atomic."""

    __slots__ = ("_batches", "bytes", "tally", "_lock")

    def __init__(self) -> None:
        self._batches: dict[int, tuple[Any, int]] = {}  # start -> (the batch, its bytes)
        self.bytes = 0
        self.tally: HeldBytes | None = None
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._batches)

    def get(self, start: int) -> Any:
        """The batch kept at ``start`` (where it is in the fetched bytes), None if none is."""
        found = self._batches.get(start)
        return None if found is None else found[0]

    def pop(self, start: int) -> Any:
        """``get``, and no longer kept (nor counted)."""
        with self._lock:
            found = self._batches.pop(start, None)
            if found is None:
                return None
            self._add(-found[1])
        return found[0]

    def keep(self, start: int, whole: Any, size: int) -> None:
        """Keep batch ``whole``, decoded, at ``start``; it takes ``size`` bytes beside the fetched
        ones (instead of a batch kept there already: decoded on two threads at once)."""
        with self._lock:
            before = self._batches.get(start)
            self._batches[start] = (whole, size)
            self._add(size - (0 if before is None else before[1]))

    def _add(self, n: int) -> None:
        """(``_lock`` held.)"""
        self.bytes += n
        if self.tally is not None:
            self.tally.add(n)

    def count_in(self, tally: HeldBytes | None) -> None:
        """Count these batches in ``tally`` from now on (None: in none), and no longer in the
        one before."""
        with self._lock:
            if self.tally is not None:
                self.tally.add(-self.bytes)
            self.tally = tally
            if tally is not None:
                tally.add(self.bytes)
