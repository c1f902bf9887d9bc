"""A finished batch lets go of the ``send_many`` hooks and the delivery callbacks it held.

(``BatchState.completions`` and ``callbacks``.) A hook's ``Completion`` holds the call's
``RecordFutures``, whose segments hold the batch: batch -> completions -> Completion -> futures ->
segments -> batch is a reference cycle, and it stayed after the batch finished. Reference counting
could then free neither the batch nor the hook nor what the hook refers to -- in the producer
service, the whole request (its frames, its decoded records, its results:
``nodes/producer_jobs.py`` passes ``send_many`` a hook closing over the job) -- until a cyclic
collection, which a node's tuned collector (``nodes/run.py``) runs rarely. Seen in a whole-cluster
soak: the producer service's traced memory swung between 1 and 9 MB of finished requests and its
RSS crept up ~0.09 MB/min. Real producer and sender, driven by the test
(tests/unit/driven_producer.py), the collector off while it runs.
"""

from __future__ import annotations

import weakref

import pytest

from tests.unit.driven_producer import LEADER, answer, driven_producer, send_pass


class Held:
    """Something only the hook refers to (as the producer service's hook refers to its job)."""


@pytest.mark.parametrize("acks", [0, 1, -1])
def test_what_a_finished_send_many_hook_held_is_freed_without_a_collection(monkeypatch, no_collector, acks):  # noqa: ANN001
    p = driven_producer(monkeypatch, acks=acks)
    try:
        held = Held()
        gone = weakref.ref(held)
        seen: list[int] = []
        futures = p.send_many("t", [b"a", b"b", b"c"], partition=1,
                              on_complete=lambda fs, h=held: seen.append(len(fs)))
        del held
        if acks == 0:
            p.sender.run_pass()  # written one way: finished at once
        else:
            send_pass(p)
            answer(p, [[0, 0, ""]])
            p.sender.recording[LEADER].sent.clear()  # the rig's record of the request holds the batch
        assert seen == [3] and futures.result()[2].offset == (-1 if acks == 0 else 2)
        del futures
        assert gone() is None, "what the hook held is kept alive by the finished batch's cycle"
    finally:
        p.sender.stop()


def test_a_delivery_callback_that_refers_to_its_future_is_freed_without_a_collection(monkeypatch, no_collector):  # noqa: ANN001
    """The same for a delivery callback: batch -> callbacks -> the callback -> its future (a
    callback that keeps or reads the future it was given with) -> batch."""
    p = driven_producer(monkeypatch, acks=1)
    try:
        held = Held()
        gone = weakref.ref(held)
        box: list = []

        def on_delivery(md, err, h=held, box=box):  # noqa: ANN001
            box.append(md)
        box.append(p.send("t", b"a", partition=1, on_delivery=on_delivery))
        del held, on_delivery
        send_pass(p)
        answer(p, [[0, 0, ""]])
        p.sender.recording[LEADER].sent.clear()
        assert box[0].result().offset == 0 and len(box) == 2
        del box
        assert gone() is None, "the finished batch kept its delivery callbacks"
    finally:
        p.sender.stop()
