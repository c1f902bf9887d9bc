"""The monitor role (nodes/monitor/node.py): health, metrics with history, alerts, recovery."""

from nodes.monitor.node import Monitor

__all__ = ["Monitor"]
