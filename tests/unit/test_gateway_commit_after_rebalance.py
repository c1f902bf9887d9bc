"""A REST consumer instance's commit refused because its group moved on (a rebalance, or its
consumer service restarted and the instance joined again) was answered 500 (50002) with the
client library's advice ("poll() joins it again"), which a REST client cannot follow. It is a
conflict with the group's state that the client resolves by fetching again: 409 (40905)."""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.gateway.translate import translated
from webui.errors import ClusterError


@pytest.mark.parametrize("code", [P.UNKNOWN_MEMBER, P.ILLEGAL_GENERATION, P.REBALANCE_IN_PROGRESS])
def test_a_commit_refused_by_a_rebalance_is_a_conflict_to_fetch_again(code: int) -> None:
    with pytest.raises(ClusterError) as e:
        with translated("the consumer service"):
            raise RemoteError(code, "the consumer is not a member of the group (it left or has not joined): "
                                    "poll() joins it again")
    api = e.value.to_api()
    assert (api.status, api.error_code) == (409, 40905), (api.status, api.error_code)
    assert "poll()" not in api.message and "fetch" in api.message, api.message
