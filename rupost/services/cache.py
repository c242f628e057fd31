"""SOGo's memcached: its cached logins must not outlive a password change."""
from __future__ import annotations


def flush_sogo_cache(app) -> bool:
    """SOGo caches successful logins in memcached; after a password change or a
    disable the old password would keep working there until the entry expires.
    Sessions live in the database, so flushing logs nobody out. Best effort: a
    stopped memcached has nothing cached."""
    from pymemcache.client.base import Client

    try:
        client = Client(("127.0.0.1", app.config.port("memcached")), connect_timeout=1, timeout=2)
        try:
            return bool(client.flush_all(noreply=False))
        finally:
            client.close()
    except Exception:  # connection errors and pymemcache's own protocol errors alike
        return False
