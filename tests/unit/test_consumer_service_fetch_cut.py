"""A REST fetch's ``max_bytes`` cuts what an instance's poll took: the records past the cut stay
buffered for the next fetch (``Consumer.poll(max_bytes=...)``). Given back by a seek, they were
dropped with everything the instance had fetched ahead of that partition and fetched again: at
a consumer service's 1 MiB share and the gateway's default 512 KiB per GET, every byte was read
from the brokers about twice, and at 64 KiB per GET sixteen times."""

from __future__ import annotations

from typing import Any, Callable

from fabric import protocol as P
from tests.unit.builders_group_consumer import LOG_END_OFFSET, RECORDS_PER_FETCH_ANSWER, RestInstance


def fetches_asked(rest: RestInstance) -> list[int]:
    """The offsets the instance's FETCHes ask its broker for, from now on."""
    asked: list[int] = []
    request = rest.broker.request

    def recording(command: bytes, header: dict, payloads: Any = (), *, callback: Callable, timeout_ms: int = 0) -> int:
        if command == P.FETCH:
            asked.append(header["parts"][0][2])
        return request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)
    rest.broker.request = recording  # type: ignore[method-assign]
    return asked


def test_records_past_a_fetchs_byte_limit_are_not_fetched_again() -> None:
    rest = RestInstance(enable_auto_commit=False)
    asked = fetches_asked(rest)
    got: list[int] = []
    for _ in range(3 * LOG_END_OFFSET):
        got += rest.fetch(max_records=5000, max_bytes=50)  # ~10 of the fake broker's records of 5 bytes
        if len(got) >= LOG_END_OFFSET:
            break
    assert asked == sorted(set(asked)), f"offsets fetched again: {asked[:12]}..."
    assert got == list(range(LOG_END_OFFSET))
    assert len(asked) <= LOG_END_OFFSET // RECORDS_PER_FETCH_ANSWER + 1


def test_a_lost_answer_to_a_cut_fetch_goes_out_again_from_what_the_instance_holds() -> None:
    """The answer to a fetch cut by ``max_bytes`` is lost (the gateway says so: ``answered``
    below it, ``lost`` at it): the instance gives its records back. That dropped what it had
    put back and fetched ahead of the partition, and fetched it all again."""
    rest = RestInstance(enable_auto_commit=False)
    asked = fetches_asked(rest)
    fetch_id, first = 0, []
    while not first and fetch_id < 20:
        fetch_id += 1
        first = rest.fetch(max_records=5000, max_bytes=50, fetch_id=fetch_id)
    assert first and first[0] == 0 and len(first) < RECORDS_PER_FETCH_ANSWER
    again = rest.fetch(max_records=5000, max_bytes=50, fetch_id=fetch_id + 1, answered=fetch_id - 1, lost=fetch_id)
    assert again == first  # its records go out again
    assert asked == sorted(set(asked)), f"offsets fetched again: {asked}"
