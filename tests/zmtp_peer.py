"""A hand-written ZMTP 3.0 DEALER over a plain TCP socket, for tests that send what libzmq
never would: frames of one multipart message that is never finished. ``sendall`` blocks until
the kernel took the bytes, so what was sent has (all but a few socket buffers) reached the
node. Also: a process's resident memory from /proc. Not thread-safe."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from fabric import protocol as P
from fabric import wire

GREETING = bytes([0xFF]) + bytes(8) + bytes([0x7F, 3, 0]) + b"NULL".ljust(20, b"\0") + bytes(32)
SOCKET_TIMEOUT_S = 30.0


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class RawDealer:
    """ZMTP 3.0, NULL security, socket type DEALER, over TCP to ``host:port``."""

    def __init__(self, host: str, port: int, identity: bytes = b"hostile") -> None:
        self.sock = socket.create_connection((host, port), timeout=SOCKET_TIMEOUT_S)
        self.sock.sendall(GREETING)
        peer = self._read_exactly(64)
        assert peer[0] == 0xFF and peer[10] >= 3, f"not a ZMTP 3 greeting: {peer!r}"
        props = _property(b"Socket-Type", b"DEALER") + _property(b"Identity", identity)
        self._send_frame(b"\x05READY" + props, more=False, command=True)
        flags, body = self._read_frame()
        assert flags & 0x04 and body.startswith(b"\x05READY"), f"expected READY, got {body[:16]!r}"

    def send_frames(self, frames: list[bytes], *, last_has_more: bool) -> None:
        for i, frame in enumerate(frames):
            self._send_frame(frame, more=last_has_more or i < len(frames) - 1)

    def start_request(self, command: bytes = P.PRODUCE, request_id: int = 4242) -> None:
        """The usual first frames of a request; the message stays open."""
        self.send_frames([b"", P.VERSION, command, wire.pack({"id": request_id, "acks": 1, "parts": []})],
                         last_has_more=True)

    def read_reply(self) -> dict:
        """One whole reply message: its header."""
        frames = []
        while True:
            flags, body = self._read_frame()
            if flags & 0x04:
                continue  # a command (PING/PONG)
            frames.append(body)
            if not flags & 0x01:
                break
        header, _ = wire.decode_reply(frames)
        return header

    def close(self) -> None:
        self.sock.close()

    def _send_frame(self, body: bytes, *, more: bool, command: bool = False) -> None:
        flags = (0x01 if more else 0) | (0x04 if command else 0)
        if len(body) > 255:
            self.sock.sendall(struct.pack(">BQ", flags | 0x02, len(body)) + body)
        else:
            self.sock.sendall(bytes([flags, len(body)]) + body)

    def _read_frame(self) -> tuple[int, bytes]:
        flags = self._read_exactly(1)[0]
        size = struct.unpack(">Q", self._read_exactly(8))[0] if flags & 0x02 else self._read_exactly(1)[0]
        return flags, self._read_exactly(size)

    def _read_exactly(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            assert chunk, "the node closed the connection"
            out += chunk
        return bytes(out)


def _property(name: bytes, value: bytes) -> bytes:
    return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value

