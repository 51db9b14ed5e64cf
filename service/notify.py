"""Change notices between replicas over Redis pub/sub: a writer says "label set NAME changed", every replica syncs.

Notices only make replicas look sooner; the pointer polling in ``service.app`` stays the source of truth, so a lost
notice, a Redis restart or no Redis at all costs at most one poll period, never a wrong version.
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlparse

log = logging.getLogger("lcs.notify")


class RedisNotices:
    def __init__(self, url: str, registry_url: str):
        import redis

        parts = urlparse(url)
        host = f"{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"
        self.url = parts._replace(netloc=host, query="").geturl()  # shown in logs and on /readyz: no password
        self.channel = f"lcs:registry:{registry_url}"  # one channel per registry: no cross-talk
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.error: str | None = None  # why the subscription is down right now (for /readyz), None when listening

    def publish(self, name: str) -> None:
        import redis

        try:
            self.client.publish(self.channel, name)
        except redis.RedisError as e:  # the write itself succeeded; other replicas will see it when they poll
            log.warning("change notice for %s not sent (%s); replicas pick it up by polling", name, e)

    def listen(self, on_notice, stop: threading.Event) -> threading.Thread:
        """Call ``on_notice(name)`` from a daemon thread for every notice until ``stop`` is set; reconnects after
        Redis goes away, and calls ``on_notice(None)`` on each (re)connect so a missed notice is caught up at once."""

        def run() -> None:
            import redis

            while not stop.is_set():
                pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                try:
                    pubsub.subscribe(self.channel)
                    self.error = None
                    log.info("listening for registry notices on %s", self.url)
                    on_notice(None)
                    while not stop.is_set():
                        msg = pubsub.get_message(timeout=0.5)
                        if msg and msg["type"] == "message":
                            on_notice(msg["data"].decode(errors="replace"))
                except (redis.RedisError, OSError) as e:
                    if self.error is None:
                        log.warning("registry notices from %s unavailable (%s); polling until back", self.url, e)
                    self.error = f"{type(e).__name__}: {e}"
                    stop.wait(1.0)
                finally:
                    pubsub.close()

        t = threading.Thread(target=run, name="lcs-notices", daemon=True)
        t.start()
        return t
