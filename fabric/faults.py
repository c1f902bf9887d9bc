"""Fault injection in the fabric, for tests: drop all traffic from named peers.

Only a node whose config has ``faults.enabled: true`` accepts the FAULTS command that sets the
rules; in every other node the rules stay empty and each check is one attribute test. A cut
between nodes A and B is made by telling A to block B and B to block A: each drops what it
receives from the other (requests by the DEALER identity's node-name prefix, replies by the
peer the client talks to, PUB/SUB messages by the sender's node name).

Not thread-safe: owned by the node's reactor.
"""

from __future__ import annotations


class FaultRules:
    def __init__(self, enabled: bool, broker_names: dict[int, str] | None = None) -> None:
        self.enabled = enabled
        self.blocked: frozenset[str] = frozenset()
        self.broker_names = broker_names or {}
        self.dropped = 0

    def set_blocked(self, names: list[str]) -> None:
        self.blocked = frozenset(names)

    def blocks(self, node_name: str | None) -> bool:
        if not self.blocked or node_name not in self.blocked:
            return False
        self.dropped += 1
        return True

    def blocks_broker(self, broker_id: int) -> bool:
        return bool(self.blocked) and self.blocks(self.broker_names.get(broker_id))

    def blocks_identity(self, identity: bytes) -> bool:
        """A DEALER identity is ``node-name/pid/random`` (fabric.rpc.make_socket)."""
        if not self.blocked:
            return False
        return self.blocks(identity.split(b"/", 1)[0].decode("utf-8", "replace"))
