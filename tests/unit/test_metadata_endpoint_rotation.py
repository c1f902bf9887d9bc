"""Where a producer's sender and a consumer ask for metadata, try after try
(``bootstrap.metadata_endpoint``): the coordinator (the source of truth) every other try, the
bootstrap endpoints the others. The bootstrap list names the coordinator too (make_config's,
``loom``'s: the coordinator first), so with the coordinator down its turns in the list were spent
on it again: 3 s timeouts one after the other before a live broker was asked -- a producer whose
coordinator and one leader were SIGKILLed acknowledged nothing for 21 s
(test_faults_gateway_produce). The bootstrap turns now go to the other endpoints."""

from __future__ import annotations

import dataclasses

from fabric.client.bootstrap import metadata_endpoint
from fabric.metadata import ClusterMetadata

COORDINATOR = "tcp://127.0.0.1:19004"
BROKERS = ["tcp://127.0.0.1:19001", "tcp://127.0.0.1:19002", "tcp://127.0.0.1:19003"]


def _asked(metadata: ClusterMetadata, endpoints: list[str], tries: int) -> list[str]:
    return [metadata_endpoint(metadata, endpoints, attempt) for attempt in range(tries)]


def test_with_the_coordinator_known_the_bootstrap_turns_go_to_the_other_endpoints() -> None:
    md = dataclasses.replace(ClusterMetadata.empty(), coordinator=COORDINATOR)
    asked = _asked(md, [COORDINATOR, *BROKERS], 8)
    assert asked[0::2] == [COORDINATOR] * 4, asked  # the source of truth every other try
    assert asked[1::2] == [*BROKERS, BROKERS[0]], asked  # every broker in turn, none skipped


def test_without_the_coordinator_known_every_bootstrap_endpoint_takes_its_turn() -> None:
    md = ClusterMetadata.empty()
    assert _asked(md, [COORDINATOR, *BROKERS], 5) == [COORDINATOR, *BROKERS, COORDINATOR]


def test_a_bootstrap_list_of_the_coordinator_alone_still_asks_it() -> None:
    md = dataclasses.replace(ClusterMetadata.empty(), coordinator=COORDINATOR)
    assert _asked(md, [COORDINATOR], 4) == [COORDINATOR] * 4
