"""Account caches across the cluster: a change made through node A reaches node B's dovecot
cache through B's agent (NOTIFY rupost_caches), long before the cache's 5 minutes."""
from __future__ import annotations

import uuid

from mailclients import imap_login_works
from support.cluster import wait_until


def test_a_password_changed_on_node_a_is_refused_on_node_b_at_once(cluster):
    a, b = cluster.node("nodea"), cluster.node("nodeb")
    domain = f"k{uuid.uuid4().hex[:6]}.test"
    a.app.domains.add(domain)
    user, old, new = f"kim@{domain}", "kim-password-1", "kim-password-2"
    a.app.mailboxes.add(user, old)
    # clients new to the stick table stay on B; one per step (a refused login delays the next
    # ones from its address), and a step polls from its own until the first refusal
    first, second, third, fourth = (cluster.client_address(k) for k in range(40, 44))
    for node in (a, b):
        node.start_agent(interval=1, hold_down=300)
    try:
        assert wait_until(lambda: all(a.app.nodes.agent_alive(n) for n in a.app.nodes.list()), 30)
        assert imap_login_works(993, user, old, first, host=b.address)  # in B's dovecot cache now
        a.app.mailboxes.set_password(user, new)
        assert wait_until(lambda: not imap_login_works(993, user, old, second, host=b.address), 10), \
            "node B still accepts the old password from its cache"
        assert imap_login_works(993, user, new, third, host=b.address)
        a.app.mailboxes.set_enabled(user, False)
        assert wait_until(lambda: not imap_login_works(993, user, new, fourth, host=b.address), 10), \
            "node B still lets a disabled mailbox in"
    finally:
        for node in (a, b):
            node.stop_agent()
