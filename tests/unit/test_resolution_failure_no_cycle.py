"""A host name that does not resolve leaves no reference cycle behind (``Resolution``).

``Resolution._run`` kept the resolver's error on the resolution (``self.error``) from the frame
whose ``self`` it is: the error's traceback holds that frame, error -> traceback -> frame ->
resolution -> error, a reference cycle that kept the resolution and the error until a cyclic
collection, which a node's tuned collector (``nodes/run.py``) runs rarely -- and a node's
connection to a peer whose name does not resolve (yet) resolves it again at every retry
(``fabric.zmtp_client_connection``). The resolver is faked (no name is looked up); the
collector is off while this runs.
"""

from __future__ import annotations

import socket
import weakref

import pytest

from fabric import zmtp_client_connection as zcc


class NotResolved(socket.gaierror):
    """The resolver's error (a subclass: built-in exceptions take no weak references)."""


def test_a_failed_resolution_and_its_error_are_freed_without_a_collection(monkeypatch: pytest.MonkeyPatch,
                                                                           no_collector: None) -> None:
    refs: list[weakref.ref] = []

    def resolve(host: str, port: int) -> tuple:
        raise _remembered(NotResolved(socket.EAI_NONAME, "Name or service not known"), refs)
    monkeypatch.setattr(zcc, "resolve", resolve)
    resolution = zcc.Resolution("127.0.0.1", 9)  # an address: resolved at once, on this thread
    assert resolution.done.is_set() and isinstance(resolution.error, NotResolved) and resolution.address is None
    refs.append(weakref.ref(resolution))
    del resolution
    assert [r() for r in refs] == [None, None], "the failed resolution and its error are kept by a reference cycle"


def _remembered(error: NotResolved, refs: list[weakref.ref]) -> NotResolved:
    refs.append(weakref.ref(error))
    return error  # raised by the caller, which keeps no local of it
