"""Config validation: every shipped file loads; every error names the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fabric.config import ConfigError, load_config
from tests.harness import ROOT

CONFIGS = sorted((ROOT / "config").glob("*.yaml"))
MINIMAL = {
    "nodes": {
        "coordinator": {"role": "coordinator", "port": 19004},
        "broker-1": {"role": "broker", "broker_id": 1, "port": 19001},
    },
}


def write(tmp_path: Path, raw: object, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_load(path: Path) -> None:
    cfg = load_config(path, environ={})
    assert cfg.source == str(path)
    assert cfg.coordinator.role == "coordinator" and cfg.brokers()
    assert cfg.topics.replication_factor <= len(cfg.brokers())


def test_the_shipped_configs_are_there() -> None:
    assert {"cluster.yaml", "lmdb.yaml", "single-node.yaml", "five-brokers.yaml"} <= {p.name for p in CONFIGS}
    assert load_config(ROOT / "config/lmdb.yaml", environ={}).storage.engine == "lmdb"


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL), environ={})
    assert cfg.storage.engine == "segment" and cfg.node("broker-1").publish_port == 19101
    assert cfg.bootstrap() == ["tcp://127.0.0.1:19004", "tcp://127.0.0.1:19001"]


def test_preferred_leader_check_interval_defaults_to_5_s_and_is_bounded(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, MINIMAL), environ={}).replication.preferred_leader_check_ms == 5000
    raw = {**MINIMAL, "replication": {"preferred_leader_check_ms": 1000}}
    assert load_config(write(tmp_path, raw), environ={}).replication.preferred_leader_check_ms == 1000
    with pytest.raises(ConfigError, match="replication.preferred_leader_check_ms"):
        load_config(write(tmp_path, {**MINIMAL, "replication": {"preferred_leader_check_ms": 0}}), environ={})


def test_unknown_key_is_rejected_with_file_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, {**MINIMAL, "storage": {"engin": "lmdb"}})
    with pytest.raises(ConfigError) as e:
        load_config(path, environ={})
    assert str(path) in str(e.value) and "storage.engin" in str(e.value)
    with pytest.raises(ConfigError, match="surprise"):
        load_config(write(tmp_path, {**MINIMAL, "surprise": 1}, "top.yaml"), environ={})


def test_broker_without_broker_id(tmp_path: Path) -> None:
    raw = {"nodes": {**MINIMAL["nodes"], "broker-2": {"role": "broker", "port": 19002}}}
    path = write(tmp_path, raw)
    with pytest.raises(ConfigError) as e:
        load_config(path, environ={})
    assert str(path) in str(e.value) and "nodes.broker-2" in str(e.value) and "broker_id" in str(e.value)


def test_duplicate_ports(tmp_path: Path) -> None:
    raw = {"nodes": {**MINIMAL["nodes"], "broker-2": {"role": "broker", "broker_id": 2, "port": 19001}}}
    with pytest.raises(ConfigError, match=r"port 19001 of broker-2 is also used by broker-1"):
        load_config(write(tmp_path, raw), environ={})
    # a PUB port (port + 100) collides too
    raw = {"nodes": {**MINIMAL["nodes"], "broker-2": {"role": "broker", "broker_id": 2, "port": 19101}}}
    with pytest.raises(ConfigError, match=r"port 19101"):
        load_config(write(tmp_path, raw), environ={})


def test_env_override(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    cfg = load_config(path, environ={"LOOM_STORAGE__ENGINE": "lmdb", "LOOM_LIVENESS__SESSION_TIMEOUT_MS": "5000"})
    assert cfg.storage.engine == "lmdb" and cfg.liveness.session_timeout_ms == 5000
    with pytest.raises(ConfigError, match=r"storage.fsync \(set by the environment: LOOM_STORAGE__FSYNC\)"):
        load_config(path, environ={"LOOM_STORAGE__FSYNC": "sometimes"})  # the variable is named, not only the file


@pytest.mark.parametrize("raw, field", [
    ({"storage": {"page_cache_tail_bytes": True}}, "storage.page_cache_tail_bytes"),
    ({"security": {"rate_limit_per_s": False}}, "security.rate_limit_per_s"),
    ({"nodes": {**MINIMAL["nodes"], "broker-1": {"role": "broker", "broker_id": 1, "port": 19001,
                                                 "storage": {"segment_bytes_max": True}}}},
     "nodes.broker-1.storage.segment_bytes_max"),
])
def test_true_or_false_for_a_number_is_an_error_naming_the_field(tmp_path: Path, raw: dict, field: str) -> None:
    """YAML's booleans are not taken as 1 and 0."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {**MINIMAL, **raw}), environ={})
    assert field in str(e.value) and "a number is wanted" in str(e.value)
    with pytest.raises(ConfigError, match="storage.segment_bytes_max.*a number is wanted, not true"):
        load_config(write(tmp_path, MINIMAL, "env.yaml"), environ={"LOOM_STORAGE__SEGMENT_BYTES_MAX": "true"})
    cfg = load_config(write(tmp_path, {**MINIMAL, "topics": {"auto_create": True}}, "bool.yaml"), environ={})
    assert cfg.topics.auto_create is True  # a boolean key still takes one


def test_loom_config_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    assert load_config(None, environ={"LOOM_CONFIG": str(path)}).source == str(path)


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "nodes: {broker-1: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"{path}: not valid YAML"):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n", "list.yaml"), environ={})


@pytest.mark.parametrize("data_dir", [None, "./state", "../elsewhere/state"])
def test_relative_data_dir_is_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          data_dir: str | None) -> None:
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    raw = dict(MINIMAL, cluster={"data_dir": data_dir} if data_dir else {})
    path = write(conf_dir, raw)
    monkeypatch.chdir(tmp_path)  # anywhere but the config's directory
    expected = (conf_dir / (data_dir or "./data")).resolve()
    assert Path(load_config(path, environ={}).cluster.data_dir) == expected
    # the same for an override from the environment
    env_cfg = load_config(path, environ={"LOOM_CLUSTER__DATA_DIR": "rel"})
    assert Path(env_cfg.cluster.data_dir) == (conf_dir / "rel").resolve()


def test_absolute_data_dir_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, dict(MINIMAL, cluster={"data_dir": str(tmp_path / "abs")}))
    assert load_config(path, environ={}).cluster.data_dir == str(tmp_path / "abs")


def test_shipped_configs_keep_their_data_next_to_the_repository() -> None:
    assert Path(load_config(ROOT / "config" / "cluster.yaml", environ={}).cluster.data_dir) == ROOT / "data"


@pytest.mark.parametrize("gateway", [
    {"worker_threads": 48, "websockets_max": 48},   # every request thread a WebSocket's: REST never answers
    {"worker_threads": 48, "websockets_max": 37},   # 11 left: under a quarter of 48
    {"worker_threads": 8, "websockets_max": 5},     # 3 left: under the fixed minimum of 4
    {"worker_threads": 5, "websockets_max": 2},
    {"worker_threads": 8},                          # the default 24 WebSockets: more than every thread
])
def test_websockets_max_must_leave_request_threads_for_rest(tmp_path: Path, gateway: dict) -> None:
    """Each WebSocket holds a request thread for its life: a ``websockets_max`` that leaves too
    few for REST lets users' sockets stop /health, /health/live and the dashboard (and the
    monitor then restarts the gateway)."""
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, {**MINIMAL, "gateway": gateway}), environ={})
    assert "gateway.websockets_max" in str(e.value) and "worker_threads" in str(e.value), str(e.value)
    with pytest.raises(ConfigError, match=r"gateway.websockets_max \(set by the environment: LOOM_GATEWAY__WEBSOCKETS_MAX\)"):
        load_config(write(tmp_path, MINIMAL, "env.yaml"), environ={"LOOM_GATEWAY__WEBSOCKETS_MAX": "48"})


@pytest.mark.parametrize("gateway, long_polls", [
    ({}, 12),                                          # the defaults: 48 threads, 24 WebSockets
    ({"worker_threads": 48, "websockets_max": 36}, 6),  # exactly a quarter left
    ({"worker_threads": 8, "websockets_max": 4}, 2),    # exactly the minimum left
    ({"worker_threads": 512, "websockets_max": 384}, 64),
])
def test_websockets_max_leaving_the_reserve_loads(tmp_path: Path, gateway: dict, long_polls: int) -> None:
    cfg = load_config(write(tmp_path, {**MINIMAL, "gateway": gateway}), environ={})
    assert cfg.gateway.rest_threads == cfg.gateway.worker_threads - cfg.gateway.websockets_max
    assert cfg.gateway.long_polls_max == long_polls  # half the REST threads may wait in a long poll
