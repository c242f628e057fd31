"""Panel pages for shared mailboxes and the rights on mailboxes (send-as, send-on-behalf),
with the roles and the audit journal of the rest of the panel, in Russian and English."""
from __future__ import annotations

from .conftest import audit_rows, text


def test_superadmin_manages_a_shared_mailbox_and_its_rights(node, superadmin, domain, mailbox):
    alice, _ = mailbox("alice")
    info = f"info@{domain}"
    r = superadmin.post("/shared-mailboxes/add", {"address": info, "name": "Info", "quota": "1G"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/shared-mailboxes/{info}")
    r = superadmin.post(f"/shared-mailboxes/{info}/members",
                        {"member": alice, "right_read": "1", "right_insert": "1", "right_delete": "1"})
    assert r.status_code == 302
    assert node.app.shared_mailboxes.show(info)["members"] == [
        {"address": alice, "rights": ["read", "insert", "delete"], "acl": "lrstipekx", "group": False}]
    r = superadmin.post(f"/shared-mailboxes/rights/{info}/send", {"grantee": alice, "kind": "send-on-behalf",
                                                                  "back": "shared"})
    assert r.status_code == 302 and r.headers["Location"].endswith(f"/shared-mailboxes/{info}")

    page = text(superadmin.get(f"/shared-mailboxes/{info}"))
    assert alice in page and "Shared/" + info in page
    assert "Общие ящики" in page and "отправка по поручению" in page and "чтение, добавление, удаление" in page
    assert info in text(superadmin.get("/shared-mailboxes/"))
    assert "отправка по поручению" in text(superadmin.get(f"/mailboxes/{info}"))  # the mailbox page shows it too

    # a bad right is refused with the service's message, nothing changes
    r = superadmin.post(f"/shared-mailboxes/rights/{info}/send", {"grantee": f"ghost@{domain}", "kind": "send-as"},
                        follow_redirects=True)
    assert "neither a mailbox nor a distribution list" in text(r)
    assert [g["grantee"] for g in node.app.sender_rights.list(info)] == [alice]

    assert audit_rows(node, "shared_mailbox.add", info)
    assert audit_rows(node, "shared_mailbox.member", info)
    assert audit_rows(node, "mailbox.send_on_behalf.grant", info)

    # a group (distribution list) as member: shown as one, in both languages
    team = f"team@{domain}"
    node.app.distribution_lists.add(team, members=[alice])
    r = superadmin.post(f"/shared-mailboxes/{info}/members", {"member": team, "right_read": "1"})
    assert r.status_code == 302
    page = text(superadmin.get(f"/shared-mailboxes/{info}"))
    assert f"{team} (группа)" in page, page
    superadmin.post(f"/shared-mailboxes/{info}/members", {"member": team, "remove": "1"})
    node.app.distribution_lists.remove(team)

    superadmin.post(f"/shared-mailboxes/{info}/members", {"member": alice, "remove": "1"})
    superadmin.post(f"/shared-mailboxes/rights/{info}/send", {"grantee": alice, "kind": "send-on-behalf",
                                                              "revoke": "1"})
    assert node.app.shared_mailboxes.show(info)["members"] == [] and node.app.sender_rights.list(info) == []
    superadmin.post(f"/shared-mailboxes/{info}/remove")
    assert info not in text(superadmin.get("/shared-mailboxes/"))


def test_readonly_sees_and_cannot_change(node, readonly, domain, mailbox):
    alice, _ = mailbox("alice")
    info = f"team@{domain}"
    node.app.shared_mailboxes.add(info)
    node.app.shared_mailboxes.set_member(info, alice, "read")
    page = text(readonly.get(f"/shared-mailboxes/{info}"))
    assert alice in page and 'id="set-member"' not in page
    for path, data in [(f"/shared-mailboxes/{info}/members", {"member": alice, "remove": "1"}),
                       (f"/shared-mailboxes/rights/{info}/send", {"grantee": alice, "kind": "send-as"}),
                       ("/shared-mailboxes/add", {"address": f"x@{domain}"})]:
        assert readonly.post(path, data).status_code == 403, path
    assert [m["address"] for m in node.app.shared_mailboxes.show(info)["members"]] == [alice]
    assert node.app.sender_rights.list(info) == []
