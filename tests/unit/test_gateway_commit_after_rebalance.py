"""A REST consumer instance's commit refused because its group moved on (a rebalance, or its
consumer service restarted and the instance joined again) was answered 500 (50002) with the
client library's advice ("poll() joins it again"), which a REST client cannot follow. It is a
conflict with the group's state that the client resolves by fetching again: 409 (40905)."""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.errors import NoCommittedOffsetError, RemoteError
from nodes.gateway.translate import translated
from webui.errors import ClusterError
from webui.ws_consume import partition_taken


@pytest.mark.parametrize("code", [P.UNKNOWN_MEMBER, P.ILLEGAL_GENERATION, P.REBALANCE_IN_PROGRESS])
def test_a_commit_refused_by_a_rebalance_is_a_conflict_to_fetch_again(code: int) -> None:
    with pytest.raises(ClusterError) as e:
        with translated("the consumer service"):
            raise RemoteError(code, "the consumer is not a member of the group (it left or has not joined): "
                                    "poll() joins it again")
    api = e.value.to_api()
    assert (api.status, api.error_code) == (409, 40905), (api.status, api.error_code)
    assert "poll()" not in api.message and "fetch" in api.message, api.message


@pytest.mark.parametrize("raised, taken", [
    (RemoteError(P.PARTITION_NOT_ASSIGNED, "t-0 is not assigned to i-1 in generation 2"), True),
    (RemoteError(P.OFFSET_OUT_OF_RANGE, "t-0: 90 is past the log end 80"), False),
    (NoCommittedOffsetError("g", [("t", 0)]), False)], ids=["not-assigned", "out-of-range", "nothing-committed"])
def test_of_the_refusals_one_kind_covers_the_error_says_which_is_a_partition_a_rebalance_took(
        raised: Exception, taken: bool) -> None:
    """All three are ``invalid_offset`` for the client; /ws/consume answers only the first as a
    rebalance and goes on (``partition_taken``), by the code the error carries from the answer."""
    with pytest.raises(ClusterError) as e:
        with translated("the consumer service"):
            raise raised
    assert e.value.kind == "invalid_offset" and partition_taken(e.value) is taken
    assert e.value.code == (raised.code if isinstance(raised, RemoteError) else None)
