"""One error root: config, engine, batch and wire errors are LoomErrors; remote errors come as
the subclass of their code."""

from __future__ import annotations

import pickle

import pytest

from engines.api import CorruptBatch, EngineError, StorageFull
from engines.batch import BatchError
from fabric import protocol as P
from fabric.config import ConfigError
from fabric.errors import (FabricError, LoomError, MalformedFrame, NotEnoughReplicasError, NotLeaderError,
                           RemoteError, RequestTimeout)


@pytest.mark.parametrize("cls", [ConfigError, EngineError, CorruptBatch, StorageFull, BatchError, FabricError,
                                 MalformedFrame, RemoteError, RequestTimeout])
def test_every_operating_error_is_a_loom_error(cls: type) -> None:
    assert issubclass(cls, LoomError)


def test_programmer_errors_are_not_loom_errors() -> None:
    assert not issubclass(AssertionError, LoomError) and not issubclass(TypeError, LoomError)


def test_a_remote_error_is_the_subclass_of_its_code() -> None:
    e = RemoteError(P.NOT_LEADER, "leader is broker 2", leader=2)
    assert type(e) is NotLeaderError and e.code == P.NOT_LEADER and e.details == {"leader": 2} and e.retriable
    assert type(RemoteError(P.NOT_ENOUGH_REPLICAS)) is NotEnoughReplicasError
    other = RemoteError(P.INVALID_TOPIC, "bad name")
    assert type(other) is RemoteError and other.code == P.INVALID_TOPIC and not other.retriable


@pytest.mark.parametrize("err", [RemoteError(P.NOT_LEADER, "x", leader=3), RemoteError(P.INVALID_TOPIC, "y")])
def test_remote_errors_survive_pickling(err: RemoteError) -> None:
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and back.code == err.code and back.message == err.message
    assert back.details == err.details
