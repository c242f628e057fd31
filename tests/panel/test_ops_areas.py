"""Panel areas over the operations services: mail queues, distribution lists (with the LDAP
filter preview) and directories. Flask test client against the session's node; the queue
test changes the node's real postfix queue (mail to mailclients.UNREACHABLE stays deferred)."""
from __future__ import annotations

import re
import uuid

from mailclients import UNREACHABLE, message, smtps
from test_mailqueues import raw_queue as postfix_queue
from test_mailqueues import wait_for

from support.instance import free_ports

from .conftest import audit_rows, text

PAGES = ["/mailqueues/", "/lists/", "/directories/"]


def raw_queue(node) -> dict[str, dict]:
    """The queue as postfix reports it (tests/test_postqueue.py), by queue id."""
    return {m["queue_id"]: m for m in postfix_queue(node)}


def queue_one(node, mailbox, local_part: str = "far-", subject: str = "queued from the panel test") -> tuple[str, str]:
    """Submit one message to an unreachable recipient (`local_part` + a unique tag); (sender,
    queue id) once it is deferred."""
    sender, password = mailbox(f"q{uuid.uuid4().hex[:6]}")
    rcpt = f"{local_part}{uuid.uuid4().hex[:6]}@[{UNREACHABLE}]"
    with smtps(node.ports["submissions"]) as client:
        client.login(sender, password)
        assert client.send_message(message(sender, rcpt, subject)) == {}

    def deferred():
        mine = [m for m in raw_queue(node).values() if m["sender"] == sender]
        return mine[0]["queue_id"] if len(mine) == 1 and mine[0]["queue_name"] == "deferred" else None

    return sender, wait_for(deferred, what="the message to be deferred")


def wait_job(superadmin, location) -> str:
    def finished():
        page = text(superadmin.get(location))
        return page if 'http-equiv="refresh"' not in page else None

    return wait_for(finished, 60, "the background job")


def test_pages_render_for_every_role(superadmin, readonly, admin_factory, make_client, domain):
    for client in (superadmin, readonly):
        for path in PAGES:
            r = client.get(path)
            assert r.status_code == 200, (path, text(r)[:500])
            assert "RuPost" in text(r)
    assert 'id="add-list"' in text(superadmin.get("/lists/")) and 'id="add-list"' not in text(readonly.get("/lists/"))
    assert 'id="add-directory"' not in text(readonly.get("/directories/"))
    queue_page = text(readonly.get("/mailqueues/"))
    assert "Hold" not in queue_page and "Задержать" not in queue_page
    scoped = make_client()
    scoped.login(admin_factory("domain_admin", [domain]))
    assert scoped.get("/mailqueues/").status_code == 200
    assert scoped.get("/lists/").status_code == 200
    assert 'id="ldap-filters"' not in text(scoped.get("/lists/"))  # node-wide: not for a domain administrator
    assert scoped.get("/directories/").status_code == 403
    nav = text(scoped.get("/"))
    assert "/mailqueues/" in nav and "/lists/" in nav and "/directories/" not in nav


def test_bad_queue_filter_is_shown_not_a_crash(superadmin):
    r = superadmin.get("/mailqueues/?q=colour=blue")
    assert r.status_code == 200 and "unknown key" in text(r)
    r = superadmin.get('/mailqueues/?q=reason="unclosed')
    assert r.status_code == 200 and "invalid filter" in text(r)


def test_csrf_required_on_the_new_forms(superadmin, node, domain):
    address = f"csrf-list@{domain}"
    for path, data in [("/lists/add", {"address": address}), ("/mailqueues/flush", {}),
                       ("/mailqueues/act", {"action": "hold", "id": "ABCDEF12345"}),
                       ("/directories/add", {"name": "csrfdir"}), ("/lists/preview", {"name": "x"})]:
        assert superadmin.post(path, data, csrf=False).status_code == 400, path
        assert superadmin.post(path, {**data, "csrf_token": "forged"}, csrf=False).status_code == 400, path
    assert node.app.distribution_lists.list(domain) == []
    assert "csrfdir" not in [d["name"] for d in node.app.directories.list()]


def test_readonly_and_domain_admin_change_nothing(readonly, admin_factory, make_client, node, domain):
    other = f"o{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(other)
    node.app.distribution_lists.add(f"team@{other}", members=[f"x@{other}"])
    node.app.distribution_lists.add(f"team@{domain}", members=[f"y@{domain}"])
    scoped = make_client()
    scoped.login(admin_factory("domain_admin", [domain]))
    everything = [("/mailqueues/act", {"action": "hold", "scope": "matching"}), ("/mailqueues/flush", {}),
                  ("/lists/add", {"address": f"ro@{domain}", "members": f"a@{domain}"}),
                  (f"/lists/team@{domain}/members/add", {"members": f"z@{domain}"}),
                  (f"/lists/team@{domain}/members/remove", {"members": f"y@{domain}"}),
                  (f"/lists/team@{domain}/remove", {}), ("/lists/update", {}),
                  ("/lists/filters/add", {"name": "ro-filter", "ldap_domain": "x", "filter": "(cn=*)"}),
                  ("/directories/add", {"name": "rodir", "kind": "ad", "uris": "ldaps://x.test"}),
                  ("/directories/corp/sync", {})]
    for path, data in everything:
        assert readonly.post(path, data).status_code == 403, path
    # a domain administrator: nothing node-wide, nothing of another domain
    for path, data in everything[:2] + everything[6:] + [
            ("/lists/add", {"address": f"new@{other}", "members": f"a@{other}"}),
            (f"/lists/team@{other}/members/add", {"members": f"z@{other}"}),
            (f"/lists/team@{other}/remove", {}),
            ("/lists/add", {"address": f"dyn@{domain}", "filter": "any-filter"}),
            ("/lists/preview", {"ldap_domain": "corp", "filter": "(cn=*)"}),
            ("/directories/corp/test", {})]:
        assert scoped.post(path, data).status_code == 403, path
    assert scoped.get(f"/lists/show/team@{other}").status_code == 403
    assert f"team@{other}" not in text(scoped.get("/lists/?q=team"))
    assert f"team@{domain}" in text(scoped.get("/lists/?q=team"))
    assert [m["address"] for m in node.app.distribution_lists.show(f"team@{domain}")["members"]] == [f"y@{domain}"]
    assert [m["address"] for m in node.app.distribution_lists.show(f"team@{other}")["members"]] == [f"x@{other}"]
    assert [r["address"] for r in node.app.distribution_lists.list(domain)] == [f"team@{domain}"]
    assert "rodir" not in [d["name"] for d in node.app.directories.list()]
    # its own domain's static list it may change
    scoped.post(f"/lists/team@{domain}/members/add", {"members": f"z@{domain}"})
    assert {m["address"] for m in node.app.distribution_lists.show(f"team@{domain}")["members"]} == {
        f"y@{domain}", f"z@{domain}"}
    node.app.distribution_lists.remove(f"team@{other}")
    node.app.distribution_lists.remove(f"team@{domain}")
    node.app.domains.remove(other)


def test_hold_release_delete_round_trip_changes_the_real_queue(superadmin, readonly, admin_factory, make_client,
                                                               node, mailbox, domain):
    sender, qid = queue_one(node, mailbox)
    hold_dir = node.layout.postfix_queue / "hold"
    try:
        listing = text(superadmin.get(f"/mailqueues/?q=sender={sender}"))
        assert qid in listing and UNREACHABLE in listing and 'name="id" value="' + qid in listing
        assert qid in text(readonly.get(f"/mailqueues/?q=sender={sender}"))
        assert 'name="id"' not in text(readonly.get(f"/mailqueues/?q=sender={sender}"))
        shown = superadmin.get(f"/mailqueues/show/{qid}")
        assert shown.status_code == 200 and "queued from the panel test" in text(shown)
        # domain scoping: the sender's domain administrator sees it, another domain's does not
        own, foreign = make_client(), make_client()
        own.login(admin_factory("domain_admin", [domain]))
        elsewhere = f"nobody{uuid.uuid4().hex[:6]}.test"
        node.app.domains.add(elsewhere)
        foreign.login(admin_factory("domain_admin", [elsewhere]))
        assert qid in text(own.get("/mailqueues/"))
        assert qid not in text(foreign.get("/mailqueues/"))
        assert foreign.get(f"/mailqueues/show/{qid}").status_code == 403
        assert own.post("/mailqueues/act", {"action": "hold", "id": qid}).status_code == 403
        assert raw_queue(node)[qid]["queue_name"] == "deferred"

        # hold: postfix moves it to the hold queue
        r = superadmin.post("/mailqueues/act", {"action": "hold", "id": qid}, follow_redirects=True)
        assert r.status_code == 200 and ("Held: 1" in text(r) or "Задержано сообщений: 1" in text(r))
        assert raw_queue(node)[qid]["queue_name"] == "hold" and (hold_dir / qid).exists()
        rows = audit_rows(node, "mailqueue.hold", qid)
        assert rows and rows[-1].source == "panel" and rows[-1].details["ids"] == [qid]
        # release: back in the deferred queue
        superadmin.post("/mailqueues/act", {"action": "release", "id": qid})
        assert raw_queue(node)[qid]["queue_name"] in ("deferred", "active", "incoming")
        assert not (hold_dir / qid).exists()
        assert audit_rows(node, "mailqueue.release", qid)[-1].source == "panel"
        # releasing a message that is not held: the service's error, nothing changes
        r = superadmin.post("/mailqueues/act", {"action": "release", "id": qid}, follow_redirects=True)
        assert "not on hold" in text(r)
        # a bad id and an unknown action are refused with a message
        r = superadmin.post("/mailqueues/act", {"action": "hold", "id": "../etc"}, follow_redirects=True)
        assert "invalid queue id" in text(r)
        r = superadmin.post("/mailqueues/act", {"action": "explode", "id": qid}, follow_redirects=True)
        assert "unknown queue action" in text(r)
        # hold everything matching the filter, then delete it
        superadmin.post("/mailqueues/act", {"action": "hold", "scope": "matching", "q": f"sender={sender}"})
        assert raw_queue(node)[qid]["queue_name"] == "hold"
        assert superadmin.post("/mailqueues/flush").status_code == 302
        assert raw_queue(node)[qid]["queue_name"] == "hold"  # a flush does not deliver held mail
        superadmin.post("/mailqueues/act", {"action": "delete", "id": qid})
        assert qid not in raw_queue(node)
        assert superadmin.get(f"/mailqueues/show/{qid}", follow_redirects=True).status_code == 200
    finally:
        node.app.mailqueues.act("delete", match=[f"sender={sender}"])


def test_static_list_made_in_the_panel_is_seen_by_the_service(superadmin, node, domain):
    address = f"sales@{domain}"
    r = superadmin.post("/lists/add", {"address": address, "display_name": "Sales <team>",
                                       "members": f"ann@{domain}, bob@example.org\ncid@{domain}",
                                       "sender_policy": "internal"})
    assert r.status_code == 302 and address in r.headers["Location"]
    shown = node.app.distribution_lists.show(address)
    assert shown["kind"] == "static" and shown["sender_policy"] == "internal"
    assert [m["address"] for m in shown["members"]] == [f"ann@{domain}", "bob@example.org", f"cid@{domain}"]
    assert audit_rows(node, "distribution_list.add", address)[-1].source == "panel"
    page = text(superadmin.get(f"/lists/show/{address}"))
    assert "bob@example.org" in page and "Sales &lt;team&gt;" in page
    superadmin.post(f"/lists/{address}/members/add", {"members": f"dan@{domain}"})
    superadmin.post(f"/lists/{address}/members/remove", {"members": "bob@example.org"})
    assert [m["address"] for m in node.app.distribution_lists.show(address)["members"]] == [
        f"ann@{domain}", f"cid@{domain}", f"dan@{domain}"]
    # bad input: a clear message, nothing changed
    r = superadmin.post(f"/lists/{address}/members/add", {"members": "not an address"}, follow_redirects=True)
    assert "is not a mail address" in text(r)
    r = superadmin.post("/lists/add", {"address": address}, follow_redirects=True)
    assert "already exists" in text(r)
    assert len(node.app.distribution_lists.show(address)["members"]) == 3
    # the "members" sender policy is offered and stored
    assert 'value="members"' in text(superadmin.get("/lists/"))
    board = f"board@{domain}"
    assert superadmin.post("/lists/add", {"address": board, "members": f"ann@{domain}",
                                          "sender_policy": "members"}).status_code == 302
    assert node.app.distribution_lists.show(board)["sender_policy"] == "members"
    superadmin.post(f"/lists/{board}/remove")
    assert address in text(superadmin.get(f"/lists/?q=sales@{domain}"))
    superadmin.post(f"/lists/{address}/remove")
    assert node.app.distribution_lists.list(domain) == []


def test_unreachable_directory_is_reported(superadmin, readonly, node, domain):
    port = free_ports(1)[0]  # nothing listens there
    name = f"dir{uuid.uuid4().hex[:6]}"
    form = {"name": name, "kind": "freeipa", "uris": f"ldap://127.0.0.1:{port}", "security": "plain",
            "allow_plain": "1", "base_dn": "dc=corp,dc=example", "bind_dn": "uid=rupost,dc=corp,dc=example",
            "bind_password": "service-secret", "timeout": "3"}
    # with the connection check (the default) it is refused with the directory's error
    r = superadmin.post("/directories/add", form, follow_redirects=True)
    assert "not added" in text(r)
    assert name not in [d["name"] for d in node.app.directories.list()]
    r = superadmin.post("/directories/add", {**form, "uris": "http://x.test"}, follow_redirects=True)
    assert name not in [d["name"] for d in node.app.directories.list()] and 'class="flash error"' in text(r)
    superadmin.post("/directories/add", {**form, "no_check": "1"})
    assert name in [d["name"] for d in node.app.directories.list()]
    assert audit_rows(node, "ldap_domain.add", name)[-1].source == "panel"
    page = text(superadmin.get("/directories/"))
    assert name in page and "service-secret" not in page
    try:
        # test connection: the service's report, error included, for a read-only administrator too
        for client in (superadmin, readonly):
            r = client.post(f"/directories/{name}/test")
            assert r.status_code == 200
            error = re.search(r'<pre id="directory-error">(.*?)</pre>', text(r), re.S)
            assert error and error.group(1).strip(), text(r)[-2000:]
            assert f"127.0.0.1:{port}" in text(r)
        # sync: a background job that fails with the directory's error
        r = superadmin.post(f"/directories/{name}/sync")
        assert r.status_code == 302 and "/jobs/" in r.headers["Location"]
        job_page = wait_job(superadmin, r.headers["Location"])
        assert 'id="job-error"' in job_page
        assert audit_rows(node, "ldap_domain.sync.failed", name)
        # a named filter on it, a preview that reports the unreachable server, a dynamic list kept as it was
        fname = f"f-{name}"
        superadmin.post("/lists/filters/add", {"name": fname, "ldap_domain": name, "filter": "(departmentNumber=7)"})
        assert fname in [f["name"] for f in node.app.ldap_filters.list()]
        r = superadmin.post("/lists/preview", {"name": fname})
        assert r.status_code == 200 and 'id="filter-preview"' in text(r) and "(departmentNumber=7)" in text(r)
        assert 'class="flash error"' in text(r)[text(r).index('id="filter-preview"'):]
        r = readonly.post("/lists/preview", {"ldap_domain": name, "filter": "(cn=*)(uid=*"})
        assert r.status_code == 200 and "filter" in text(r).lower() and 'id="filter-preview"' in text(r)
        dynamic = f"dyn@{domain}"
        superadmin.post("/lists/add", {"address": dynamic, "filter": fname})
        shown = node.app.distribution_lists.show(dynamic)
        assert shown["kind"] == "dynamic" and shown["filter"] == fname and shown["members"] == []
        r = superadmin.post("/lists/update", {"address": dynamic})
        job_page = wait_job(superadmin, r.headers["Location"])
        assert 'id="job-error"' in job_page and dynamic in job_page and "kept" in job_page
        node.app.distribution_lists.remove(dynamic)
        node.app.ldap_filters.remove(fname)
    finally:
        node.app.directories.remove(name, force=True)


def test_directory_and_dynamic_list_against_a_real_slapd(superadmin, node, domain, workdir):
    from support.slapd import TempSlapd

    ad = TempSlapd(workdir / f"slapd-panel-{uuid.uuid4().hex[:6]}", "ad").start()
    name = f"ad{uuid.uuid4().hex[:6]}"
    tag = uuid.uuid4().hex[:6]
    try:
        sales, _ = ad.add_user(f"s{tag}", f"s{tag}@{domain}", "Pw-sales-123", department=f"Sales{tag}")
        ad.add_user(f"o{tag}", f"o{tag}@{domain}", "Pw-other-123", department=f"Other{tag}")
        # added through the panel, with the connection check, over LDAPS with the directory's own CA
        r = superadmin.post("/directories/add", {
            "name": name, "kind": "ad", "uris": ad.ldaps_uri, "security": "ldaps", "ca_pem": ad.ca_pem,
            "base_dn": ad.users_dn, "bind_dn": ad.service_dn, "bind_password": ad.service_password,
            "mail_domains": domain, "timeout": "5"}, follow_redirects=True)
        assert name in [d["name"] for d in node.app.directories.list()], text(r)[-1500:]
        r = superadmin.post(f"/directories/{name}/test")
        assert 'id="directory-error"' not in text(r) and f"s{tag}@{domain}" in text(r)
        # sync now: a background job whose result names what it created
        r = superadmin.post(f"/directories/{name}/sync")
        job_page = wait_job(superadmin, r.headers["Location"])
        assert 'id="job-result"' in job_page and "2 created" in job_page, job_page[-1500:]
        assert node.app.mailboxes.show(f"s{tag}@{domain}")["address"] == f"s{tag}@{domain}"
        # a named filter, its preview, a dynamic list from it and an update
        fname = f"sales-{tag}"
        superadmin.post("/lists/filters/add",
                        {"name": fname, "ldap_domain": name, "filter": f"(department=Sales{tag})"})
        r = superadmin.post("/lists/preview", {"name": fname})
        preview = text(r)[text(r).index('id="filter-preview"'):]
        assert f"s{tag}@{domain}" in preview and f"o{tag}@{domain}" not in preview
        r = superadmin.post("/lists/preview", {"ldap_domain": name, "filter": f"(department=Other{tag})"})
        preview = text(r)[text(r).index('id="filter-preview"'):]
        assert f"o{tag}@{domain}" in preview and f"s{tag}@{domain}" not in preview
        address = f"sales-{tag}@{domain}"
        superadmin.post("/lists/add", {"address": address, "filter": fname})
        assert [m["address"] for m in node.app.distribution_lists.show(address)["members"]] == [f"s{tag}@{domain}"]
        ad.replace(sales, department=f"Other{tag}")
        ad.add_user(f"n{tag}", f"n{tag}@{domain}", "Pw-new-1234", department=f"Sales{tag}")
        r = superadmin.post("/lists/update", {"address": address})
        job_page = wait_job(superadmin, r.headers["Location"])
        assert "updated" in job_page and 'id="job-error"' not in job_page, job_page[-1500:]
        assert [m["address"] for m in node.app.distribution_lists.show(address)["members"]] == [f"n{tag}@{domain}"]
        page = text(superadmin.get(f"/lists/show/{address}"))
        assert f"<td>n{tag}@{domain}</td><td>фильтр</td>" in page  # a member from the filter: no Remove button
        node.app.distribution_lists.remove(address)
        node.app.ldap_filters.remove(fname)
    finally:
        try:
            node.app.directories.remove(name, force=True)
        except Exception:
            pass
        ad.destroy()
