"""The block list across the cluster: a block made through node A is applied by node B's
policy server (its in-memory view, kept current by NOTIFY rupost_blocks) within seconds, and
so is the unblock; nothing asks node B's agent or waits for a cache to expire."""
from __future__ import annotations

import uuid

from mailclients import imap_login_works
from rupost.services.blocklist import Limits
from support.cluster import wait_until


def test_a_block_and_an_unblock_made_on_node_a_hold_on_node_b(cluster):
    a, b = cluster.node("nodea"), cluster.node("nodeb")
    domain = f"bl{uuid.uuid4().hex[:6]}.test"
    a.app.domains.add(domain)
    user, password = f"bo@{domain}", "bo-password-1"
    a.app.mailboxes.add(user, password)
    attacker, bystander = cluster.client_address(50), cluster.client_address(51)
    assert imap_login_works(993, user, password, attacker, host=b.address)

    # one failure recorded on node A blocks the address (limits of this service: 1 failure)
    blocks = a.app.blocklist_with(Limits(ip_failures=1, account_failures=0, block_time=300)).record_failure(
        attacker, "", "imap")
    try:
        assert [(x["kind"], x["value"]) for x in blocks] == [("ip", attacker)]
        assert wait_until(lambda: not imap_login_works(993, user, password, attacker, host=b.address), 10), \
            "node B still lets a blocked address in"
        assert imap_login_works(993, user, password, bystander, host=b.address)  # the account is not blocked
    finally:
        a.app.blocklist.unblock(attacker)
    # dovecot's own penalty for the refused address delays its next logins by a few seconds
    assert wait_until(lambda: imap_login_works(993, user, password, attacker, host=b.address), 30), \
        "node B still refuses an address unblocked on node A"
