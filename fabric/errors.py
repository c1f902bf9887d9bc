"""The fabric's error root and the typed errors clients see.

``RemoteError`` carries a code from ``fabric.protocol``'s error table; ``retriable`` says
whether a client may refresh metadata and try again.
"""

from __future__ import annotations

from fabric import protocol as P


class FabricError(Exception):
    """Root of every error raised by the fabric and the client library."""


class MalformedFrame(FabricError):
    """A peer sent frames that do not follow the wire rules (dropped and counted)."""

    def __init__(self, code: int, message: str, request: object = None) -> None:
        super().__init__(message)
        self.code = code
        self.request = request  # the decoded request when the fault was found after decoding


class RemoteError(FabricError):
    """A node answered a request with an error."""

    def __init__(self, code: int, message: str = "", **details: object) -> None:
        self.code = code
        self.message = message or P.error_name(code)
        self.details = details
        super().__init__(f"{P.error_name(code)}: {self.message}")

    @property
    def name(self) -> str:
        return P.error_name(self.code)

    @property
    def retriable(self) -> bool:
        return self.code in P.RETRIABLE


class RequestTimeout(RemoteError):
    """No reply arrived before the deadline."""

    def __init__(self, message: str = "request timed out") -> None:
        super().__init__(P.REQUEST_TIMED_OUT, message)
