"""A domain administrator stays inside their domains in the services themselves, whatever face
calls them (the panel's views check too, but they are not the only line)."""
from __future__ import annotations

import io
import uuid

import pytest

from rupost.errors import PermissionDeniedError
from rupost.services import Actor


@pytest.fixture
def two_domains(node):
    mine, other = (f"s{uuid.uuid4().hex[:10]}.test" for _ in range(2))
    for name in (mine, other):
        node.app.domains.add(name)
    node.app.mailboxes.add(f"kept@{other}", "pw-other-123456")
    node.app.aliases.add(f"team@{other}", [f"kept@{other}"])
    scoped = node.app.as_actor(Actor("scoped-admin", "panel", "192.0.2.7", domains=frozenset({mine})))
    return scoped, mine, other


def test_inside_their_domain_everything_works(node, two_domains):
    scoped, mine, _ = two_domains
    scoped.mailboxes.add(f"in@{mine}", "pw-inside-123456")
    scoped.aliases.add(f"alias@{mine}", [f"in@{mine}"])
    scoped.mailboxes.set_enabled(f"in@{mine}", False)
    assert scoped.mailboxes.show(f"in@{mine}")["enabled"] is False
    scoped.aliases.remove(f"alias@{mine}")
    scoped.mailboxes.remove(f"in@{mine}")
    records = node.app.audit.page(actor="scoped-admin", action="mailbox.add")["rows"]
    assert records and records[0]["source"] == "panel"


@pytest.mark.parametrize("attempt", [
    lambda s, other: s.mailboxes.add(f"new@{other}", "pw-outside-123456"),
    lambda s, other: s.mailboxes.show(f"kept@{other}"),
    lambda s, other: s.mailboxes.set_password(f"kept@{other}", "pw-stolen-123456"),
    lambda s, other: s.mailboxes.set_enabled(f"kept@{other}", False),
    lambda s, other: s.mailboxes.remove(f"kept@{other}"),
    lambda s, other: s.mailboxes.list(domain=other),
    lambda s, other: s.aliases.add(f"grab@{other}", ["someone@example.org"]),
    lambda s, other: s.aliases.remove(f"team@{other}"),
    lambda s, other: s.domains.set_enabled(other, False),
    lambda s, other: s.domains.remove(other),
    lambda s, other: s.domains.add(f"n{uuid.uuid4().hex[:8]}.test"),
    lambda s, other: s.distribution_lists.list(other),
    lambda s, other: s.resources.list(other),
    lambda s, other: s.dkim.show(other),
    lambda s, other: s.dkim.generate(other),
    lambda s, other: s.dkim.rotate(other),
    lambda s, other: s.mailboxes.import_csv(io.StringIO(f"address,password\nimp@{other},pw-import-123456\n")),
])
def test_outside_their_domain_everything_is_refused_and_nothing_changes(node, two_domains, attempt):
    scoped, _, other = two_domains
    with pytest.raises(PermissionDeniedError, match=f"not {other}|not n"):
        attempt(scoped, other)
    assert node.app.mailboxes.show(f"kept@{other}")["enabled"] is True
    assert [a["address"] for a in node.app.aliases.list(other)] == [f"team@{other}"]
    assert other in [d["name"] for d in node.app.domains.list()]


def test_listings_show_only_their_domains(node, two_domains):
    scoped, mine, other = two_domains
    scoped.mailboxes.add(f"listed@{mine}", "pw-listed-123456")
    assert {d["name"] for d in scoped.domains.page()["rows"]} == {mine}
    assert {d["name"] for d in scoped.domains.list()} == {mine}
    assert {m["address"] for m in scoped.mailboxes.page()["rows"]} == {f"listed@{mine}"}
    assert {m["address"] for m in scoped.mailboxes.list()} == {f"listed@{mine}"}
    assert scoped.aliases.page(domains=[other])["rows"] == []
    assert not [a for a in scoped.aliases.list() if a["address"].endswith(f"@{other}")]


def test_a_csv_import_reaching_outside_imports_nothing(node, two_domains):
    scoped, mine, other = two_domains
    text = f"address,password\nfirst@{mine},pw-import-123456\nsecond@{other},pw-import-123456\n"
    with pytest.raises(PermissionDeniedError, match=f"not {other}; nothing imported"):
        scoped.mailboxes.import_csv(io.StringIO(text))
    assert scoped.mailboxes.list(domain=mine) == []
    assert [m["address"] for m in node.app.mailboxes.list(other)] == [f"kept@{other}"]
    done = scoped.mailboxes.import_csv(io.StringIO(f"address,password\nfirst@{mine},pw-import-123456\n"))
    assert done["imported"] == 1 and scoped.mailboxes.show(f"first@{mine}")["enabled"] is True
    node.app.dkim.generate(other, bits=1024)
    with pytest.raises(PermissionDeniedError):  # a key that exists is not shown either
        scoped.dkim.show(other)
    assert scoped.dkim.active_key(mine) is None  # their own domain without a key: no key, not a refusal
