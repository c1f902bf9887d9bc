"""The producer service hands a request's records to the client producer in runs
(``JobSender``): consecutive records without headers and with the same partition go in one
``send_many`` answered by one completion hook, the others by ``send``. Each record's result is
what one ``send`` per record gave: its partition, its offset in request order within the
partition, and the per-record errors (a record too large, an unknown partition, an unknown
topic, a full buffer, acks=0's offset -1). Real producer and sender, the sender driven by the
test (tests/unit/driven_producer.py)."""

from __future__ import annotations

from fabric import protocol as P
from fabric.records import decode_batches, partition_for_key
from tests.unit.driven_producer import LEADER, answer, send_pass


def test_mixed_records_get_the_results_one_send_per_record_gave(make_rig) -> None:  # noqa: ANN001
    rig = make_rig()
    records = [(None, b"a0", None, None), (None, b"a1", None, None), (None, b"a2", None, None),
               (None, b"h", (("n", b"v"),), None),                                   # headers: by send
               (None, b"p0", None, 2), (None, b"p1", None, 2), (None, b"x" * 300, None, 2),  # too large
               (None, b"u0", None, 5), (None, b"u1", None, 5),                        # no partition 5
               (b"k1", b"v1", None, None), (b"k2", b"v2", None, None), (None, b"a3", None, None)]
    job = rig.job(records)
    assert rig.answered == [] and job.results[6][2:] == [P.RECORD_TOO_LARGE, job.results[6][3]]
    rig.deliver()
    assert rig.answered == [job]
    r = job.results
    assert r[6][:3] == [-1, -1, P.RECORD_TOO_LARGE]
    assert r[7] == r[8] == [-1, -1, P.UNKNOWN_TOPIC_OR_PARTITION, "t has no partition 5"]
    sticky = r[0][0]
    expected_parts = {0: sticky, 1: sticky, 2: sticky, 3: sticky, 4: 2, 5: 2, 9: partition_for_key(b"k1", 3),
                      10: partition_for_key(b"k2", 3), 11: sticky}
    assert {i: r[i][0] for i in expected_parts} == expected_parts
    # offsets: each partition's records in request order, from its batch's base offset
    for p in range(3):
        mine = [i for i in expected_parts if expected_parts[i] == p]
        assert [list(map(list, [r[i]]))[0] for i in mine] == [[p, 1000 * p + n, 0, ""] for n in range(len(mine))]
    payloads = rig.producer.sender.recording[LEADER].of(P.PRODUCE)[-1][2]  # type: ignore[attr-defined]
    header_record = [rec for data in payloads for rec in decode_batches("t", sticky, data) if rec.value == b"h"]
    assert len(header_record) == 1 and list(map(tuple, header_record[0].headers)) == [("n", b"v")]


def test_one_run_is_answered_in_request_order_and_acks_0_reports_offset_minus_one(make_rig) -> None:  # noqa: ANN001
    rig = make_rig(acks=0)
    job = rig.job([(None, b"v%d" % i, None, 1) for i in range(5)], acks=0)
    rig.producer.sender.run_pass()  # acks=0: sent one way, finished at once
    assert rig.answered == [job] and [list(x) for x in job.results] == [[1, -1, 0, ""]] * 5


def test_an_unknown_topic_fails_every_record_after_one_wait(make_rig) -> None:  # noqa: ANN001
    rig = make_rig()
    job = rig.job([(None, b"a", None, None), (None, b"b", None, None), (None, b"h", (("n", b"v"),), None)],
                  topic="nope")
    assert rig.answered == [job]
    assert {(x[0], x[1], x[2]) for x in job.results} == {(-1, -1, P.UNKNOWN_TOPIC_OR_PARTITION)}


def test_a_full_buffer_part_way_fails_the_rest_and_answers_once(make_rig) -> None:  # noqa: ANN001
    rig = make_rig(buffer_bytes_max=10_000)
    records = [(None, b"x" * 150, None, None)] * 100 + [(None, b"h", (("n", b"v"),), None)]
    job = rig.job(records)  # 174 bytes each: the buffer holds 57
    failed = [i for i, x in enumerate(job.results) if x is not None]
    assert failed == list(range(57, 101)) and {x[2] for x in job.results[57:]} == {P.BUFFER_FULL}
    assert rig.answered == []
    rig.deliver()
    assert rig.answered == [job]
    assert all(x[2] == 0 and x[1] >= 0 for x in job.results[:57])


def test_a_brokers_refusal_is_reported_with_its_message_alone(make_rig) -> None:  # noqa: ANN001
    """A row carries the error code and its message; the gateway puts the code's name in front
    (``record_too_large: …``). The message used to carry the name already, so REST clients read
    ``invalid_record: invalid_record: …``."""
    rig = make_rig()
    job = rig.job([(None, b"a", None, 0), (None, b"b", None, 0),          # one run: send_many
                   (None, b"h", (("n", b"v"),), 1)])                       # headers: send
    parts = send_pass(rig.producer)
    answer(rig.producer, [[-1, P.INVALID_RECORD, "the broker says no"] for _ in parts])
    assert rig.answered == [job]
    assert [list(r[2:]) for r in job.results] == [[P.INVALID_RECORD, "the broker says no"]] * 3
