"""An Admin ask that failed at one node -- a leader's LIST_OFFSETS, a METADATA ask -- leaves no
reference cycle behind, whether the call then fails or another ask answers.

``Admin.list_offsets`` kept a leader's retriable error in a local, ``last``, to raise at its
deadline; ``fetch_metadata``'s asks (``_Asks``) kept each ask's error on themselves (``last``,
``refusals``) from the frame of ``_Asks.ask``, whose ``self`` they are. The error's traceback
holds the frame that caught it: error -> traceback -> frame -> error (or -> the asks -> error),
a reference cycle that kept the error, the frames and what they held until a cyclic collection,
which the gateway's tuned collector (``nodes/run.py``) runs rarely -- and its request threads
ask offsets and metadata of a cluster with a broker down all the time. Real Admin and
``fetch_metadata``, scripted brokers; the collector is off while these run.
"""

from __future__ import annotations

import weakref
from typing import Any

import pytest
import zmq

from fabric.client import bootstrap
from fabric.client.admin import LATEST
from fabric.errors import CodedError, ConnectionRefused, RequestTimeout
from nodes.local_cluster import free_ports
from tests.unit.fakes import metadata_of
from tests.unit.test_admin_list_offsets_retries import _admin


def _remembered(error: CodedError, refs: list[weakref.ref]) -> CodedError:
    refs.append(weakref.ref(error))
    return error  # raised by the caller, which keeps no local of it


class _SilentFirst:
    """A leader whose first ``silent`` LIST_OFFSETS time out (the error raised only weakly in
    ``refs``), and which then answers offset 10."""

    def __init__(self, refs: list[weakref.ref], silent: int) -> None:
        self.refs, self.silent = refs, silent

    def call(self, command: bytes, header: dict, *a: Any, **kw: Any) -> tuple[dict, list]:
        if self.silent:
            self.silent -= 1
            raise _remembered(RequestTimeout("no reply from broker 1"), self.refs)
        return {"parts": [[t, p, 0, 10] for t, p, _ in header["parts"]]}, []


def test_list_offsets_answered_after_a_timeout_is_freed_without_a_collection(
        monkeypatch: pytest.MonkeyPatch, no_collector: None) -> None:
    refs: list[weakref.ref] = []
    admin = _admin(monkeypatch, [metadata_of({"t": 1})], {1: _SilentFirst(refs, 1)})  # type: ignore[dict-item]
    assert admin.list_offsets("t", LATEST) == {0: 10}
    assert len(refs) == 1 and refs[0]() is None, "the leader's timeout is kept by a reference cycle"


def test_list_offsets_that_times_out_is_freed_without_a_collection(monkeypatch: pytest.MonkeyPatch,
                                                                   no_collector: None) -> None:
    refs: list[weakref.ref] = []
    admin = _admin(monkeypatch, [metadata_of({"t": 1})], {1: _SilentFirst(refs, 10**9)}, timeout_ms=50)  # type: ignore[dict-item]
    try:
        admin.list_offsets("t", LATEST)
    except RequestTimeout as e:
        assert e.__cause__ is refs[-1]() and "did not answer" in e.message  # the last one, as before
    else:
        raise AssertionError("list_offsets did not time out")
    assert refs and [r() for r in refs] == [None] * len(refs), "the leader's timeouts are kept by a reference cycle"


class _RecordedAsks(bootstrap._Asks):
    """``fetch_metadata``'s asks, each only weakly in ``made``."""

    made: list[weakref.ref] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made.append(weakref.ref(self))


def _refused_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there


def test_a_metadata_fetch_every_node_refused_is_freed_without_a_collection(
        monkeypatch: pytest.MonkeyPatch, no_collector: None) -> None:
    monkeypatch.setattr(bootstrap, "_Asks", _RecordedAsks)
    monkeypatch.setattr(_RecordedAsks, "made", [])
    refs: list[weakref.ref] = []
    try:
        bootstrap.fetch_metadata(zmq.Context.instance(), [_refused_endpoint(), _refused_endpoint()], timeout_ms=5000)
    except ConnectionRefused as e:
        refs.append(weakref.ref(e))
    else:
        raise AssertionError("the fetch did not fail")
    assert len(_RecordedAsks.made) == 1 and refs
    assert [r() for r in _RecordedAsks.made + refs] == [None, None], "the failed asks are kept by a reference cycle"


def test_a_metadata_fetch_answered_after_a_refusal_is_freed_without_a_collection(
        scripted: Any, monkeypatch: pytest.MonkeyPatch, no_collector: None) -> None:
    monkeypatch.setattr(bootstrap, "_Asks", _RecordedAsks)
    monkeypatch.setattr(_RecordedAsks, "made", [])
    answering = scripted(lambda req: ({"metadata": metadata_of({"t": 1}).to_wire()}, []))
    md, ep = bootstrap.fetch_metadata(zmq.Context.instance(), [_refused_endpoint(), answering], timeout_ms=5000)
    assert ep == answering and "t" in md.topics
    assert len(_RecordedAsks.made) == 1 and _RecordedAsks.made[0]() is None, \
        "the asks are kept by the refused ask's reference cycle"

