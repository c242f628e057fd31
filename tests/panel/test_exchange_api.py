"""The REST API of issue 29: shared mailboxes and their members (users and groups), send-as /
send-on-behalf rights, delegated calendars and groupware migration jobs, with a
superadministrator's token and a domain administrator's scoped to one domain."""
from __future__ import annotations

import uuid

import pytest

from .api_support import ApiClient, make_token
from .conftest import audit_rows
from .test_api import assert_problem, wait_job


@pytest.fixture
def superapi(panel_app, node):
    return ApiClient(panel_app, make_token(node)[1])


@pytest.fixture
def other_domain(node):
    name = f"o{uuid.uuid4().hex[:10]}.test"
    node.app.domains.add(name)
    return name


def test_shared_mailbox_members_and_send_rights_through_the_api(node, superapi, panel_app, domain, mailbox,
                                                                other_domain):
    alice, _ = mailbox("alice")
    bob, _ = mailbox("bob")
    group = f"team@{domain}"
    node.app.distribution_lists.add(group, members=[bob])
    info = f"info@{domain}"
    created = superapi.post("/shared-mailboxes", json={"address": info, "display_name": "Info", "quota": "1M"})
    assert created.status_code == 201, created.get_json()
    assert created.headers["Location"].endswith(f"/shared-mailboxes/{info}") and created.get_json()["quota_bytes"] \
        == 1024 * 1024
    r = superapi.request("PUT", f"/shared-mailboxes/{info}/members/{alice}", json={"rights": ["read", "insert"]})
    assert r.status_code == 200, r.get_json()
    r = superapi.request("PUT", f"/shared-mailboxes/{info}/members/{group}", json={"rights": ["read"]})
    assert [(m["address"], m["acl"], m["group"]) for m in r.get_json()["members"]] == [
        (alice, "lrsipk", False), (group, "lrs", True)]
    assert_problem(superapi.request("PUT", f"/shared-mailboxes/{info}/members/{alice}",
                                    json={"rights": ["administer"]}), 422)
    assert superapi.patch(f"/shared-mailboxes/{info}", json={"quota": "2M"}).get_json()["quota_bytes"] == 2 << 20
    assert node.app.mailboxes.show(info)["quota_bytes"] == 2 << 20
    assert superapi.delete(f"/shared-mailboxes/{info}/members/{group}").get_json()["members"][0]["address"] == alice

    r = superapi.post("/sender-rights", json={"mailbox": info, "grantee": group, "right": "send-on-behalf"})
    assert r.status_code == 201 and r.get_json() == {"mailbox": info, "grantee": group, "right": "send-on-behalf",
                                                     "group": True}
    assert_problem(superapi.post("/sender-rights", json={"mailbox": info, "grantee": group,
                                                         "right": "send-on-behalf"}), 409)
    listed = superapi.get(f"/sender-rights?mailbox={info}").get_json()
    assert listed["total"] == 1 and listed["items"][0]["grantee"] == group
    assert superapi.delete(f"/sender-rights/{info}/send-on-behalf/{group}").status_code == 204
    assert node.app.sender_rights.list(info) == []
    assert audit_rows(node, "shared_mailbox.member", info)[-1].source == "api"

    # a domain administrator of another domain neither sees nor changes any of it
    scoped = ApiClient(panel_app, make_token(node, "domain_admin", [other_domain])[1])
    assert scoped.get("/shared-mailboxes").get_json()["total"] == 0
    assert_problem(scoped.get(f"/shared-mailboxes/{info}"), 403)
    assert_problem(scoped.request("PUT", f"/shared-mailboxes/{info}/members/{bob}", json={"rights": ["read"]}), 403)
    assert_problem(scoped.post("/sender-rights", json={"mailbox": info, "grantee": bob, "right": "send-as"}), 403)
    assert_problem(scoped.post("/shared-mailboxes", json={"address": f"x@{domain}"}), 403)
    assert scoped.get("/sender-rights").get_json()["total"] == 0

    assert superapi.delete(f"/shared-mailboxes/{info}").status_code == 204
    assert_problem(superapi.get(f"/shared-mailboxes/{info}"), 404)


def test_calendar_delegations_and_groupware_migrations_through_the_api(node, superapi, panel_app, domain,
                                                                       mailbox, other_domain):
    boss, _ = mailbox("boss")
    assistant, _ = mailbox("assistant")
    # SOGo creates a calendar on its owner's first visit: before that a delegation is refused, saying so
    body = assert_problem(superapi.request("PUT", f"/calendar-delegations/{boss}/{assistant}",
                                           json={"rights": "write"}), 409)
    assert "does not exist yet" in body["detail"]
    assert_problem(superapi.request("PUT", f"/calendar-delegations/{boss}/{assistant}", json={"rights": "all"}), 422)
    assert superapi.get(f"/calendar-delegations?owner={boss}").get_json()["total"] == 0
    scoped = ApiClient(panel_app, make_token(node, "domain_admin", [other_domain])[1])
    assert_problem(scoped.request("PUT", f"/calendar-delegations/{boss}/{assistant}", json={"rights": "read"}), 403)

    # a migration run is a job; a wrong SOGo super user fails it with the reason, nothing migrated
    start = {"source": "https://127.0.0.1:9/", "sogo_admin": boss, "sogo_password": "not-a-super-user",
             "users": [{"source_login": "old-boss", "source_password": "secret", "target": boss}]}
    r = superapi.post("/groupware-migrations", json=start)
    assert r.status_code == 202, r.get_json()
    job = wait_job(superapi, r.get_json()["id"])
    assert job["kind"] == "groupware.migrate" and job["status"] == "failed", job
    assert "SOGo refused the login" in job["error"] or "SOGo answered" in job["error"], job
    assert "secret" not in str(job)
    assert superapi.get(f"/groupware-migrations?target={boss}").get_json()["total"] == 0
    # not for a domain administrator: the node would connect where the request says
    assert_problem(scoped.post("/groupware-migrations", json=start), 403)
    assert scoped.get("/groupware-migrations").status_code == 200
