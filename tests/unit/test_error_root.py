"""One error root: every exception class Loom's packages define derives from ``LoomError``
(config, engine, batch, wire, remote, the broker's identity, the gateway's answers), so an
application or a node catches Loom's operating errors in one clause and lets programmer errors
through. The exceptions: control flow that never leaves its module, and a failure that must
stop the node rather than be answered as an operating error (a failed fsync)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from fabric.errors import LoomError

PACKAGES = ("engines", "fabric", "nodes", "webui")
CONTROL_FLOW = {"webui.ws_outbox.Closed",  # a WebSocket's stream ends; caught by its route (webui/ws.py)
                "nodes.cli_data.Terminated"}  # SIGTERM ends `loom produce|consume` as Ctrl-C; caught by nodes/cli.py
STOPS_THE_NODE = {"engines.api.StorageFailed"}  # nodes/run.py exits on it (EXIT_STORAGE_FAILED)


def _exception_classes() -> dict[str, type]:
    found: dict[str, type] = {}
    for name in PACKAGES:
        package = importlib.import_module(name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            if info.name.endswith("__main__"):
                continue
            module = importlib.import_module(info.name)
            for cls_name, cls in inspect.getmembers(module, inspect.isclass):
                if issubclass(cls, BaseException) and cls.__module__ == info.name:
                    found[f"{info.name}.{cls_name}"] = cls
    return found


def test_every_exception_class_of_loom_derives_from_loom_error() -> None:
    classes = _exception_classes()
    assert "fabric.zmtp_codec.ProtocolViolation" in classes and "engines.offset_index.IndexDamaged" in classes
    outside = sorted(n for n, c in classes.items() if not issubclass(c, LoomError) and n not in CONTROL_FLOW | STOPS_THE_NODE)
    assert outside == []
