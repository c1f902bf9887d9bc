"""API keys of the gateway: generation, hashing, the dev admin key.

A key is a random token (``loom_`` + 43 URL-safe characters: 256 bits). The config holds only
``sha256:<hex>`` of each key: with that much entropy a fast hash is as safe as a slow one, and
lets the gateway check a key per request without a key-derivation cost. Comparison of hashes is
constant-time (``hmac.compare_digest``).

The dev admin key: ``loom up`` makes one on first start and keeps it in
``<data_dir>/admin.key`` (mode 600); when ``LOOM_ADMIN_KEY`` is set, that value is the admin
key instead and nothing is written.

No zmq here: the Flask app (webui) uses this module too. Thread-safe (pure functions).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

ROLES = ("admin", "produce", "consume", "read")
KEY_PREFIX = "loom_"
KEY_RANDOM_BYTES = 32
HASH_PREFIX = "sha256:"
ADMIN_KEY_FILE_NAME = "admin.key"
ADMIN_KEY_ENV = "LOOM_ADMIN_KEY"
ADMIN_KEY_LEN_MIN = 16


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def hash_key(key: str) -> str:
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def hashes_equal(a: str, b: str) -> bool:
    """Constant-time comparison of two key hashes."""
    return hmac.compare_digest(a.encode(), b.encode())


def admin_key_path(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / ADMIN_KEY_FILE_NAME


def read_admin_key(data_dir: str | os.PathLike, environ: dict[str, str] | None = None) -> str | None:
    """The dev admin key: ``LOOM_ADMIN_KEY`` when set, else ``<data_dir>/admin.key``, else None.
    Raises ValueError for a key shorter than ADMIN_KEY_LEN_MIN (the gateway would accept it as
    an admin key: whoever starts it, ``loom up`` or the node alone, refuses it)."""
    env = os.environ if environ is None else environ
    if env.get(ADMIN_KEY_ENV):
        key, where = env[ADMIN_KEY_ENV], ADMIN_KEY_ENV
    else:
        try:
            key, where = admin_key_path(data_dir).read_text(encoding="utf-8").strip(), str(admin_key_path(data_dir))
        except OSError:
            return None
        if not key:
            return None
    if len(key) < ADMIN_KEY_LEN_MIN:
        raise ValueError(f"{where}: the admin key must have at least {ADMIN_KEY_LEN_MIN} characters")
    return key


def ensure_admin_key(data_dir: str | os.PathLike, environ: dict[str, str] | None = None) -> tuple[str, str]:
    """(key, where it comes from): ``LOOM_ADMIN_KEY``, or the key file, made (mode 600) when
    missing. Raises ValueError for a key shorter than ADMIN_KEY_LEN_MIN."""
    env = os.environ if environ is None else environ
    if env.get(ADMIN_KEY_ENV):
        return read_admin_key(data_dir, env) or "", ADMIN_KEY_ENV  # raises for a short one
    path = admin_key_path(data_dir)
    existing = read_admin_key(data_dir, {})
    if existing:
        return existing, str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    return key, str(path)
