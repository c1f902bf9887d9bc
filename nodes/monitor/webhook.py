"""Alert notifications POSTed to webhooks, off the monitor's reactor thread.

Each webhook has its own bounded queue and its own thread, so a webhook that never answers
delays neither the health checks (the reactor only does ``put_nowait``) nor the other
webhooks. A POST that fails or times out (``timeout_ms``) is retried ``retries`` times with
``retry_backoff_ms`` doubling between tries; when the queue is full the oldest notification is
dropped and counted.

Thread-safety: ``submit`` may be called from any thread; the rest belongs to the sender thread.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request

from fabric import protocol as P
from fabric.config import WebhookConfig

log = logging.getLogger(__name__)

STOP_JOIN_TIMEOUT_S = 2.0


class WebhookSender:
    def __init__(self, config: WebhookConfig) -> None:
        self.config = config
        self.queue: queue.Queue[dict | None] = queue.Queue(P.WEBHOOK_QUEUE_MAX)
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loom-webhook", daemon=True)
        self._thread.start()

    def submit(self, payload: dict) -> None:
        """Queue one notification; never blocks."""
        while True:
            try:
                self.queue.put_nowait(payload)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        while not self._stop.is_set():
            payload = self.queue.get()
            if payload is None:
                return
            if self._post_with_retries(json.dumps(payload).encode()):
                self.delivered += 1
            else:
                self.failed += 1

    def _post_with_retries(self, body: bytes) -> bool:
        backoff_s = self.config.retry_backoff_ms / 1000
        for attempt in range(self.config.retries + 1):
            if attempt and self._stop.wait(backoff_s * 2 ** (attempt - 1)):
                return False
            req = urllib.request.Request(self.config.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "loom-monitor"})
            try:
                with urllib.request.urlopen(req, timeout=self.config.timeout_ms / 1000) as resp:  # noqa: S310 - http(s) only
                    if 200 <= resp.status < 300:
                        return True
            except (urllib.error.URLError, OSError, ValueError) as e:
                log.warning("webhook %s: attempt %d failed: %s", self.config.url, attempt + 1, e)
        return False

    def close(self) -> None:
        self._stop.set()
        try:
            self.queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(STOP_JOIN_TIMEOUT_S)
