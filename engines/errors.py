"""Loom's error root. Every error Loom raises on purpose -- config, engine, batch, wire,
remote -- derives from ``LoomError``, so an application can catch Loom's operating errors in
one clause and let programmer errors (AssertionError, TypeError) through.

It lives here, in the bottom layer (engines import nothing else of Loom's), so that every
package can derive from it; elsewhere import it as ``fabric.errors.LoomError``.
"""

from __future__ import annotations


class LoomError(Exception):
    """Root of every error Loom raises for an operating condition (never for a bug)."""
