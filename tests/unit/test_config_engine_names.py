"""An unknown storage engine name is a config error at load (naming the field and the known
engines), cluster-wide, per broker and through LOOM_STORAGE__ENGINE -- not a cluster that
shows every node up and then hangs every produce."""

from __future__ import annotations

import copy

import pytest

from engines import registry
from fabric.config import ConfigError, parse_config

MINIMAL = {
    "nodes": {
        "coordinator": {"role": "coordinator", "port": 19004},
        "broker-1": {"role": "broker", "broker_id": 1, "port": 19001},
    },
}


def _raw(**sections: object) -> dict:
    raw = copy.deepcopy(MINIMAL)
    raw.update(sections)
    return raw


def _assert_names_field_and_engines(message: str, field: str) -> None:
    assert field in message, message
    assert "rocksdb" in message, message
    for name in registry.available():
        assert name in message, message


def test_unknown_cluster_wide_engine_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_raw(storage={"engine": "rocksdb"}), "c.yaml", environ={})
    _assert_names_field_and_engines(str(e.value), "c.yaml: storage.engine")


def test_unknown_per_broker_engine_override_is_refused() -> None:
    raw = _raw()
    raw["nodes"]["broker-1"]["storage"] = {"engine": "rocksdb"}
    with pytest.raises(ConfigError) as e:
        parse_config(raw, "c.yaml", environ={})
    _assert_names_field_and_engines(str(e.value), "nodes.broker-1.storage.engine")


def test_unknown_engine_from_the_environment_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(_raw(), "c.yaml", environ={"LOOM_STORAGE__ENGINE": "rocksdb"})
    _assert_names_field_and_engines(str(e.value), "storage.engine")


@pytest.mark.parametrize("name", registry.available())
def test_every_registered_engine_is_accepted(name: str) -> None:
    raw = _raw(storage={"engine": name})
    raw["nodes"]["broker-1"]["storage"] = {"engine": name}
    cfg = parse_config(raw, "c.yaml", environ={})
    assert cfg.storage_for("broker-1").engine == name
