"""Cluster configuration: the YAML file, validated by pydantic, with ``LOOM_*`` overrides.

This module holds the file as a whole -- ``LoomConfig``: its sections, the checks across nodes,
the lookups -- and its loading. Each section's model is in ``fabric.config_sections``; every
name of both is importable from here.

Every error names the file and the field (``ConfigError``). Unknown keys are rejected.
Environment overrides use ``__`` between levels, e.g. ``LOOM_STORAGE__ENGINE=lmdb`` or
``LOOM_LIVENESS__SESSION_TIMEOUT_MS=2000``; values are parsed as YAML scalars.

Thread-safety: models are immutable after load; share freely.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from engines.errors import LoomError
from fabric.config_sections import (LONG_POLL_SHARE, REST_THREADS_MIN, REST_THREADS_SHARE, AlertRuleConfig,
                                    AlertsConfig, ApiKey, ClusterSection, FaultsConfig, GatewayConfig, LimitsConfig,
                                    LivenessConfig, MonitorConfig, NodeConfig, ReplicationConfig, Role,
                                    SecurityConfig, ServicesConfig, StorageConfig, StorageOverride, SupervisorConfig,
                                    TopicDefaults, WebhookConfig, _Model, rest_threads_reserve)

__all__ = [
    "ConfigError", "DEFAULT_CONFIG_PATH", "ENV_PREFIX", "LoomConfig", "apply_env_overrides", "load_config",
    "parse_config",
    # the sections (fabric.config_sections)
    "Role", "StorageConfig", "StorageOverride", "NodeConfig", "ClusterSection", "TopicDefaults",
    "ReplicationConfig", "LivenessConfig", "LimitsConfig", "ApiKey", "GatewayConfig", "SecurityConfig",
    "AlertRuleConfig", "AlertsConfig", "WebhookConfig", "MonitorConfig", "SupervisorConfig", "ServicesConfig",
    "FaultsConfig", "REST_THREADS_MIN", "REST_THREADS_SHARE", "LONG_POLL_SHARE", "rest_threads_reserve",
]

DEFAULT_CONFIG_PATH = "config/cluster.yaml"
ENV_PREFIX = "LOOM_"


class ConfigError(LoomError):
    """A configuration file or override is invalid; the message names the file and field."""


class LoomConfig(_Model):
    cluster: ClusterSection = Field(default_factory=ClusterSection)
    nodes: dict[str, NodeConfig]
    storage: StorageConfig = Field(default_factory=StorageConfig)
    topics: TopicDefaults = Field(default_factory=TopicDefaults)
    replication: ReplicationConfig = Field(default_factory=ReplicationConfig)
    liveness: LivenessConfig = Field(default_factory=LivenessConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    faults: FaultsConfig = Field(default_factory=FaultsConfig)
    services: ServicesConfig = Field(default_factory=ServicesConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    source: str = ""

    @field_validator("nodes")
    @classmethod
    def _check_nodes(cls, nodes: dict[str, NodeConfig]) -> dict[str, NodeConfig]:
        roles = [n.role for n in nodes.values()]
        if roles.count("coordinator") != 1:
            raise ValueError("exactly one node must have role coordinator")
        if roles.count("broker") < 1:
            raise ValueError("at least one broker is needed")
        ids = [n.broker_id for n in nodes.values() if n.role == "broker"]
        if len(set(ids)) != len(ids):
            raise ValueError("broker_id values must be unique")
        seen: dict[tuple[str, int], str] = {}
        for name, n in nodes.items():
            for p in n.bound_ports():
                if (n.host, p) in seen:
                    raise ValueError(f"port {p} of {name} is also used by {seen[(n.host, p)]}")
                seen[(n.host, p)] = name
        return nodes

    # -- lookups -------------------------------------------------------------------------
    def node(self, name: str) -> NodeConfig:
        try:
            return self.nodes[name]
        except KeyError:
            raise ConfigError(f"{self.source}: no node named {name!r} (have {', '.join(self.nodes)})") from None

    def nodes_with_role(self, role: str) -> dict[str, NodeConfig]:
        return {k: v for k, v in self.nodes.items() if v.role == role}

    @property
    def coordinator_name(self) -> str:
        return next(iter(self.nodes_with_role("coordinator")))

    @property
    def coordinator(self) -> NodeConfig:
        return self.nodes[self.coordinator_name]

    def brokers(self) -> dict[int, tuple[str, NodeConfig]]:
        """broker_id -> (node name, node config)."""
        return {n.broker_id: (k, n) for k, n in self.nodes.items() if n.role == "broker"}  # type: ignore[misc]

    def storage_for(self, node_name: str) -> StorageConfig:
        override = self.node(node_name).storage
        if override is None:
            return self.storage
        changes = {k: v for k, v in override.model_dump().items() if v is not None}
        return self.storage.model_copy(update=changes)

    def data_dir_for(self, node_name: str) -> Path:
        return Path(self.cluster.data_dir) / node_name

    def bootstrap(self) -> list[str]:
        """Endpoints a client may bootstrap from: the coordinator first, then brokers."""
        eps = [self.coordinator.endpoint]
        eps += [n.endpoint for _, (_, n) in sorted(self.brokers().items())]
        return eps


# -- loading -------------------------------------------------------------------------------
def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_env_overrides(raw: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Apply ``LOOM_A__B=value`` overrides to the raw mapping (returns it)."""
    env = os.environ if environ is None else environ
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue  # LOOM_CONFIG and the like are not overrides
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: {part} is not a section")
        node[path[-1]] = _parse_scalar(value)
    return raw


def _env_overrides(environ: dict[str, str] | None) -> dict[str, str]:
    """Dotted config field -> the ``LOOM_A__B`` variable that sets it."""
    env = os.environ if environ is None else environ
    return {".".join(p.lower() for p in name[len(ENV_PREFIX):].split("__")): name
            for name in env if name.startswith(ENV_PREFIX) and "__" in name}


def _format_errors(source: str, err: ValidationError, overrides: dict[str, str] | None = None) -> str:
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        by = next((var for path, var in (overrides or {}).items() if field == path or field.startswith(path + ".")), None)
        lines.append(f"{source}: {field}" + (f" (set by the environment: {by})" if by else "") + f": {e['msg']}")
    return "\n".join(lines)


def parse_config(raw: Any, source: str = "<config>", environ: dict[str, str] | None = None,
                 base_dir: Path | None = None) -> LoomConfig:
    """Validate a parsed config. A relative ``cluster.data_dir`` is taken relative to
    ``base_dir`` (the config file's directory), so that ``loom down -c PATH`` finds the same
    cluster from any directory."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    raw = apply_env_overrides(dict(raw), environ)
    cluster = raw.get("cluster", {})
    if base_dir is not None and isinstance(cluster, dict):
        data_dir = cluster.get("data_dir", ClusterSection.model_fields["data_dir"].default)
        if isinstance(data_dir, str) and not os.path.isabs(data_dir):
            raw["cluster"] = dict(cluster, data_dir=os.path.normpath(base_dir / data_dir))
    raw["source"] = source
    try:
        return LoomConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_errors(source, e, _env_overrides(environ))) from e


def load_config(path: str | os.PathLike | None = None, environ: dict[str, str] | None = None) -> LoomConfig:
    """Load and validate a YAML config (default: $LOOM_CONFIG, then config/cluster.yaml)."""
    env = os.environ if environ is None else environ
    path = path or env.get("LOOM_CONFIG") or DEFAULT_CONFIG_PATH
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8)") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_error_line(e)}") from e
    return parse_config(raw, str(path), env, base_dir=Path(path).resolve().parent)


def _yaml_error_line(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: the problem and where (1-based line, column)."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or " ".join(str(e).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"
