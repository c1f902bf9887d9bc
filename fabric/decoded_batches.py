"""What a consumer's views keep decoded beside the fetched bytes, and what that takes.

``fabric.records._decode`` decodes a batch cut between two views once, whole, and keeps it in
the ``DecodedBatches`` the views split from one fetch share, for the rest of the batch (each
small poll out of a big batch decoded it again, before). Decoded, small records take several
times their fetched bytes; ``DecodedBatches`` estimates what each batch it keeps takes, and
adds it to a ``HeldBytes`` while a holder asks it to -- a consumer counts it against its
``buffered_bytes_max`` while the rest of the batch is buffered (``fabric.client.consumer``).

Not thread-safe: owned by the views of one consumer, as they are.
"""

from __future__ import annotations

from typing import Any

# what a record unpacked as a (timestamp_ms, key, value, headers) tuple takes beside the bytes of
# its payload, about (the tuple, the timestamp's int, a bytes object per key and value: 130-190
# bytes measured on CPython 3.11, keyless to keyed; headers take more): ``DecodedBatches``
# estimates a batch it keeps by it
DECODED_RECORD_BYTES = 192


class HeldBytes:
    """A count of bytes that several ``DecodedBatches`` add to while they are counted there (a
    consumer's: the decoded batches its buffer holds). Not thread-safe."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


class DecodedBatches:
    """Whole batches decoded for the views split from one fetched view (``fabric.records._decode``), by where
    each batch is in the fetched bytes, and what they take beside those bytes (``bytes``,
    estimated per batch: nothing for a fixed batch that reads the fetched bytes in place, the
    payload for one decompressed, the payload and DECODED_RECORD_BYTES a record for tuples).
    ``tally``: a ``HeldBytes`` that counts them too, while a holder asks it to
    (``RecordBatchView.count_decoded``). Not thread-safe."""

    __slots__ = ("_batches", "bytes", "tally")

    def __init__(self) -> None:
        self._batches: dict[int, tuple[Any, int]] = {}  # start -> (the batch, its bytes)
        self.bytes = 0
        self.tally: HeldBytes | None = None

    def __len__(self) -> int:
        return len(self._batches)

    def get(self, start: int) -> Any:
        """The batch kept at ``start`` (where it is in the fetched bytes), None if none is."""
        found = self._batches.get(start)
        return None if found is None else found[0]

    def pop(self, start: int) -> Any:
        """``get``, and no longer kept (nor counted)."""
        found = self._batches.pop(start, None)
        if found is None:
            return None
        self._add(-found[1])
        return found[0]

    def keep(self, start: int, whole: Any, size: int) -> None:
        """Keep batch ``whole``, decoded, at ``start``; it takes ``size`` bytes beside the fetched ones."""
        self._batches[start] = (whole, size)
        self._add(size)

    def _add(self, n: int) -> None:
        self.bytes += n
        if self.tally is not None:
            self.tally.bytes += n

    def count_in(self, tally: HeldBytes | None) -> None:
        """Count these batches in ``tally`` from now on (None: in none), and no longer in the
        one before."""
        if self.tally is not None:
            self.tally.bytes -= self.bytes
        self.tally = tally
        if tally is not None:
            tally.bytes += self.bytes
