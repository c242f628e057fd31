"""postfix's lookups answered from memcached first, and never from rows that changed.

The builtin template fronts the hosted-domain, recipient-access and alias-expansion lookups
with the node's memcached (docs/benchmarks.md). These tests hold it to what the lookups
promised without it: a change counts at the next message, made here, made by "another
node" straight in SQL, and with memcached down mail still flows on PostgreSQL.
"""
from __future__ import annotations

import time
import uuid

from pymemcache.client.base import Client
from sqlalchemy import text

from adapters.lookup_cache import socket_path
from mailclients import message, smtp, wait_for_subject
from rupost.services.cache import LookupCacheGuard
from support.cluster import wait_until


def rcpt(node, address: str) -> int:
    with smtp(node.ports["smtp"]) as client:
        client.mail("someone@example.org")
        return client.rcpt(address)[0]


def cached(node, table: str, key: str) -> bytes | None:
    # postfix's own memcached, on its Unix socket (component lookup_cache)
    client = Client(str(socket_path(node.layout)), connect_timeout=2, timeout=2)
    try:
        return client.get(f"rupost:{table}:{key}")
    finally:
        client.close()


def data_sql(node, statement: str, **params) -> None:
    """A write that no service of this process makes (a connection, not a session: no local
    flush follows), as another node or an administrator in psql would."""
    with node.app.dbs.engine("data").begin() as conn:
        conn.execute(text(statement), params)


def test_a_change_made_here_counts_at_the_next_message(node, domain, mailbox):
    newcomer = f"new-{uuid.uuid4().hex[:6]}@{domain}"
    assert rcpt(node, newcomer) == 550
    assert cached(node, "recipient_access", newcomer) == b"550 5.1.1 User unknown in virtual mailbox table"
    assert cached(node, "domains", domain) == b"yes"  # trivial-rewrite's answer, cached too

    node.app.mailboxes.add(newcomer, "pw-newcomer-1")
    assert rcpt(node, newcomer) == 250
    node.app.mailboxes.remove(newcomer)
    assert rcpt(node, newcomer) == 550

    # an alias's expansion: mail follows the new destinations at once
    first, first_pw = mailbox("first")
    second, second_pw = mailbox("second")
    desk = f"desk@{domain}"
    node.app.aliases.add(desk, [first])
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", desk, "to first")) == {}
    wait_for_subject(node.ports["imaps"], first, first_pw, "to first")
    assert cached(node, "aliases", desk) == first.encode()
    node.app.aliases.remove(desk)
    node.app.aliases.add(desk, [second])
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", desk, "to second")) == {}
    wait_for_subject(node.ports["imaps"], second, second_pw, "to second")

    # a list's members (written as statements, not through the ORM's flush)
    crew = f"crew@{domain}"
    node.app.distribution_lists.add(crew, members=[first])
    assert rcpt(node, crew) == 250
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", crew, "crew one")) == {}
    wait_for_subject(node.ports["imaps"], first, first_pw, "crew one")
    assert cached(node, "aliases", crew) == first.encode()
    node.app.distribution_lists.remove_members(crew, [first])
    node.app.distribution_lists.add_members(crew, [second])
    assert cached(node, "aliases", crew) is None
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", crew, "crew two")) == {}
    wait_for_subject(node.ports["imaps"], second, second_pw, "crew two")

    # a disabled domain is no longer hosted: its cached "hosted" answer is gone with it. Fresh
    # addresses each time: smtpd keeps its last address resolution for 30 s by itself
    # (postfix's resolve_clnt), cache or no cache
    node.app.domains.set_enabled(domain, False)
    try:
        assert rcpt(node, f"a-{uuid.uuid4().hex[:6]}@{domain}") == 554  # relay access denied
    finally:
        node.app.domains.set_enabled(domain, True)
    assert rcpt(node, f"b-{uuid.uuid4().hex[:6]}@{domain}") == 550  # hosted again: unknown user
    assert rcpt(node, second) == 250

    # a domain not hosted here is an answer too ("no": the sender domain of nearly every
    # inbound message, otherwise asked of PostgreSQL each time; a fresh one, since smtpd keeps
    # its recent resolutions and would not ask again after a flush), and a domain added here
    # is hosted at once, though "no" was cached for it a moment before
    added = f"added-{uuid.uuid4().hex[:6]}.test"
    assert rcpt(node, f"c-{uuid.uuid4().hex[:6]}@{added}") == 554
    assert cached(node, "domains", added) == b"no"
    node.app.domains.add(added)
    try:
        assert rcpt(node, f"d-{uuid.uuid4().hex[:6]}@{added}") == 550
    finally:
        node.app.domains.remove(added)


def test_an_account_change_keeps_the_lookup_cache_and_a_disable_empties_it(node, domain, mailbox):
    """A quota or password change leaves postfix's cached lookups alone (no row they read
    changed; only dovecot's and SOGo's caches are emptied); a disable, written in the same
    kind of session, empties them before the service returns (the trigger's mark on the
    transaction, data migration 0015)."""
    kept, _ = mailbox("kept")
    assert rcpt(node, kept) == 250
    answer = cached(node, "recipient_access", kept)
    assert answer is not None
    node.app.mailboxes.set_quota(kept, "3G")
    node.app.mailboxes.set_password(kept, "kept-password-2")
    assert cached(node, "recipient_access", kept) == answer
    assert cached(node, "domains", domain) == b"yes"
    node.app.mailboxes.set_enabled(kept, False)
    assert cached(node, "recipient_access", kept) is None
    assert rcpt(node, kept) == 550
    node.app.mailboxes.set_enabled(kept, True)
    assert rcpt(node, kept) == 250


def test_a_change_made_elsewhere_reaches_the_cache_through_the_database(node, domain, mailbox):
    """The data database announces the change itself (a trigger per table); the agent's guard
    empties memcached when it hears it, and once more a moment later, and whenever it
    (re)connects. Columns the lookups do not read (a password) announce nothing."""
    existing, _ = mailbox("there")
    reports = []
    guard = LookupCacheGuard(node.app, second_flush=0.5, retry=2.0,
                             report=lambda state, message: reports.append(state)).start()
    try:
        assert wait_until(lambda: guard.listening, 10, 0.05), "the guard listens"
        newcomer = f"elsewhere-{uuid.uuid4().hex[:6]}@{domain}"
        assert rcpt(node, newcomer) == 550
        flushes = guard.flushes
        data_sql(node, "INSERT INTO mailboxes (domain_id, local_part, address, password_hash, display_name, "
                       "quota_bytes, enabled) SELECT id, :local, :address, 'x', '', 0, true FROM domains "
                       "WHERE name = :domain", local=newcomer.split("@")[0], address=newcomer, domain=domain)
        assert wait_until(lambda: guard.flushes >= flushes + 2, 10, 0.05), "a flush at once and a second one"
        assert rcpt(node, newcomer) == 250

        assert rcpt(node, existing) == 250
        flushes = guard.flushes
        data_sql(node, "UPDATE mailboxes SET password_hash = 'y' WHERE address = :a", a=existing)
        data_sql(node, "UPDATE mailboxes SET enabled = false WHERE address = :a", a=newcomer)
        assert wait_until(lambda: guard.flushes >= flushes + 2, 10, 0.05), "the disable is announced"
        assert rcpt(node, newcomer) == 550
        time.sleep(1.0)  # past any second flush a password announcement would have started
        assert guard.flushes == flushes + 2, "the password change announced a change too"

        # the listening connection dies: reported, listened again, and a change made while it
        # was down is not left in the cache (the guard empties memcached when it reconnects)
        data_sql(node, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE application_name = 'rupost-listen' AND datname = current_database()")
        assert wait_until(lambda: "error" in reports, 10, 0.02), "the lost connection is reported"
        # made within the 2 s the guard waits before reconnecting: nobody hears this announcement
        data_sql(node, "UPDATE mailboxes SET enabled = true WHERE address = :a", a=newcomer)
        assert wait_until(lambda: guard.listening and "ok" in reports, 10, 0.05), "the guard listens again"
        assert rcpt(node, newcomer) == 250
    finally:
        guard.stop()


def test_mail_flows_on_postgresql_alone_while_memcached_is_down(node, domain, mailbox):
    address, password = mailbox("steady")
    # memcached gone (as if it died), not an administrator's stop: that would also take the
    # node out of service
    spec = node.app.components.process_spec("lookup_cache")
    node.app.backend.stop("lookup_cache", spec)
    assert not node.app.backend.is_running("lookup_cache", spec)
    try:
        assert rcpt(node, f"nobody-{uuid.uuid4().hex[:6]}@{domain}") == 550
        with smtp(node.ports["smtp"]) as client:
            assert client.send_message(message("someone@example.org", address, "no cache")) == {}
        wait_for_subject(node.ports["imaps"], address, password, "no cache")
    finally:
        node.app.backend.start("lookup_cache", spec)
