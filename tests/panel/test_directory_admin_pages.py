"""Panel pages over the directories service: edit and remove an LDAP domain, named LDAP filters
(add, edit, preview, remove), LDAP administrator mappings; the dashboard's queue, storage and
quota tiles. Flask test client against the session's node; the LDAP parts against a real slapd."""
from __future__ import annotations

import html
import re
import uuid

import pytest
from click.testing import CliRunner
from sqlalchemy import delete

from mailclients import message, smtps, wait_for_subject
from rupost.db.models import Node
from rupost.panel.areas import dashboard
from rupost.services.quota_usage import QuotaUsageService
from support.instance import free_ports
from .conftest import audit_rows, text

NEW_ENDPOINTS = [("/directories/{d}/edit", {"uris": "ldap://x.test"}), ("/directories/{d}/remove", {"confirm": "{d}"}),
                 ("/directories/filters/add", {"name": "f-x", "ldap_domain": "{d}", "filter": "(cn=*)"}),
                 ("/directories/filters/{f}/set", {"filter": "(cn=x)"}), ("/directories/filters/{f}/remove", {}),
                 ("/admins/ldap-mappings/add", {"directory": "{d}", "kind": "user", "value": "x", "role": "readonly"}),
                 ("/admins/ldap-mappings/remove", {"directory": "{d}", "kind": "user", "value": "{u}"}),
                 ("/quota/measure", {}), ("/directories/{d}/writeback/set", {"enabled": ""}),
                 ("/directories/{d}/writeback/plan", {}), ("/directories/{d}/writeback/run", {})]
INJECTIONS = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "*)(uid=*", "(cn=*)(|(uid=*",
              "x)(objectClass=*", "\\2a)(|(cn=*", "'; DROP TABLE ldap_domains; --", "../../etc/passwd"]


def flashed_errors(page: str) -> list[str]:
    """The error messages shown, unescaped (the page itself carries them HTML-escaped)."""
    return [html.unescape(m) for m in re.findall(r'<div class="flash error"><pre>(.*?)</pre>', page, re.S)]


@pytest.fixture
def directory(node, domain):
    """An LDAP domain pointing at a port where nothing listens (added without the check)."""
    port = free_ports(1)[0]
    name = f"dir{uuid.uuid4().hex[:6]}"
    node.app.directories.add(name, "freeipa", [f"ldap://127.0.0.1:{port}"], "cn=users,dc=corp,dc=example",
                             "uid=rupost,dc=corp,dc=example", "service-secret-1", security="plain",
                             allow_plain=True, mail_domains=[domain], user_filter="(departmentNumber=1)",
                             timeout=3, check=False)
    yield name
    for f in node.app.ldap_filters.list():
        if f["ldap_domain"] == name:
            node.app.ldap_filters.remove(f["name"])
    try:
        node.app.directories.remove(name, force=True)
    except Exception:
        pass


def edit_form(node, name, **changes) -> dict:
    d = node.app.directories.show(name)
    form = {"uris": " ".join(d["uris"]), "security": d["security"], "allow_plain": "1", "base_dn": d["base_dn"],
            "bind_dn": d["bind_dn"], "bind_password": "", "ca_pem": "", "mail_domains": " ".join(d["mail_domains"]),
            "user_filter": d["user_filter"], "group_filter": d["group_filter"], "timeout": str(d["timeout"]),
            "enabled": "1" if d["enabled"] else ""}
    form.update(changes)
    return form


# ------------------------------------------------------------------ roles, CSRF
def test_roles_and_csrf_on_every_new_page_and_action(superadmin, readonly, admin_factory, make_client, node,
                                                     domain, directory):
    fname = f"f-{directory}"
    node.app.ldap_filters.add(fname, directory, "(departmentNumber=7)", "seven")
    node.app.directories.admin_map_add(directory, "user", "ro-user", "readonly")
    scoped = make_client()
    scoped.login(admin_factory("domain_admin", [domain]))
    paths = [(p.format(d=directory, f=fname, u="ro-user"), {k: v.format(d=directory, f=fname, u="ro-user")
                                                             for k, v in data.items()})
             for p, data in NEW_ENDPOINTS]
    # superadmin sees the forms; read-only sees the data without them; a domain admin nothing node-wide
    page = text(superadmin.get("/directories/"))
    assert f"/directories/{directory}/edit" in page and 'id="add-ldap-filter"' in page and fname in page
    assert superadmin.get(f"/directories/{directory}/edit").status_code == 200
    page = text(readonly.get("/directories/"))
    assert fname in page and "(departmentNumber=7)" in page and 'id="try-filter"' in page
    assert "/edit" not in page and 'id="add-ldap-filter"' not in page and f"/filters/{fname}/remove" not in page
    assert readonly.get(f"/directories/{directory}/edit").status_code == 403
    admins_page = text(readonly.get("/admins/"))
    assert "ro-user" in admins_page and 'id="add-ldap-mapping"' not in admins_page
    assert 'id="add-ldap-mapping"' in text(superadmin.get("/admins/"))
    assert scoped.get("/directories/").status_code == 403
    assert scoped.get(f"/directories/{directory}/edit").status_code == 403
    assert scoped.get("/admins/").status_code == 403
    assert scoped.post("/directories/filters/test", {"name": fname}).status_code == 403
    for path, data in paths:
        assert readonly.post(path, data).status_code == 403, path
        assert scoped.post(path, data).status_code == 403, path
        assert superadmin.post(path, data, csrf=False).status_code == 400, path
        assert superadmin.post(path, {**data, "csrf_token": "forged"}, csrf=False).status_code == 400, path
    # nothing of it happened
    assert node.app.directories.show(directory)["uris"] == [node.app.directories.show(directory)["uris"][0]]
    assert node.app.directories.show(directory)["base_dn"] == "cn=users,dc=corp,dc=example"
    assert [(f["name"], f["filter"]) for f in node.app.ldap_filters.list() if f["ldap_domain"] == directory] == [
        (fname, "(departmentNumber=7)")]
    assert [m["value"] for m in node.app.directories.admin_map_list() if m["directory"] == directory] == ["ro-user"]
    # a read-only administrator may preview a filter: it reads the directory and changes nothing
    r = readonly.post("/directories/filters/test", {"name": fname})
    assert r.status_code == 200 and 'id="filter-preview"' in text(r) and 'id="filter-error"' in text(r)


# ------------------------------------------------------------------ edit and remove an LDAP domain
def test_edit_keeps_the_password_when_left_empty_and_is_audited(superadmin, node, domain, directory):
    page = text(superadmin.get(f"/directories/{directory}/edit"))
    assert "service-secret-1" not in page and "cn=users,dc=corp,dc=example" in page
    port = free_ports(1)[0]
    form = edit_form(node, directory, uris=f"ldap://127.0.0.1:{port}, ldap://127.0.0.2:{port}",
                     base_dn="ou=People,dc=corp,dc=example", user_filter="", group_filter="(cn=mail-*)", timeout="7")
    r = superadmin.post(f"/directories/{directory}/edit", form)
    assert r.status_code == 302, text(r)[-1500:]
    shown = node.app.directories.show(directory)
    assert shown["uris"] == [f"ldap://127.0.0.1:{port}", f"ldap://127.0.0.2:{port}"]
    assert (shown["base_dn"], shown["user_filter"], shown["group_filter"], shown["timeout"]) == (
        "ou=People,dc=corp,dc=example", "", "(cn=mail-*)", 7)
    assert node.app.directories.get_settings(directory).bind_password == "service-secret-1"  # kept
    row = audit_rows(node, "ldap_domain.update", directory)[-1]
    assert row.source == "panel" and row.actor != "cli"
    assert set(row.details["changed"]) == {"uris", "base_dn", "user_filter", "group_filter", "timeout"}
    # a new password replaces it; the audit names it, never its value
    superadmin.post(f"/directories/{directory}/edit", edit_form(node, directory, bind_password="rotated-Secret-2"))
    assert node.app.directories.get_settings(directory).bind_password == "rotated-Secret-2"
    row = audit_rows(node, "ldap_domain.update", directory)[-1]
    assert row.details["changed"] == ["bind_password"] and "rotated-Secret-2" not in str(row.details)
    # disable it
    superadmin.post(f"/directories/{directory}/edit", edit_form(node, directory, enabled=""))
    assert node.app.directories.show(directory)["enabled"] is False


@pytest.mark.parametrize("field,value,problem", [
    ("uris", "", "at least one server URI"), ("uris", "http://dc.example", "is not an LDAP URI"),
    ("base_dn", "", "base DN is empty"), ("base_dn", '<script>alert(1)</script>', "not a valid distinguished name"),
    ("bind_dn", "not a dn", "not a valid distinguished name"), ("user_filter", "(cn=*)(|(uid=*", "unclosed"),
    ("user_filter", "*)(uid=*", "must be enclosed in parentheses"), ("group_filter", "(cn=a\\zz)", "backslash"),
    ("timeout", "0", "between 1 and 300"), ("timeout", "abc", "between 1 and 300"),
    ("security", "ldaps", "must start with ldaps://"), ("security", "telnet", "invalid security"),
    ("mail_domains", "no-such-domain.test", "does not exist"), ("ca_pem", "../../etc/passwd", "not a PEM"),
])
def test_bad_edit_is_refused_with_the_problem_named_and_changes_nothing(superadmin, node, directory, field, value,
                                                                        problem):
    before = node.app.directories.show(directory)
    r = superadmin.post(f"/directories/{directory}/edit", edit_form(node, directory, **{field: value}))
    assert r.status_code == 400
    page = text(r)
    errors = flashed_errors(page)
    assert errors and problem in errors[0], errors
    assert "<script>alert(1)</script>" not in page  # shown escaped, in the message and the form
    assert 'id="edit-directory"' in page
    assert node.app.directories.show(directory) == before
    assert node.app.directories.get_settings(directory).bind_password == "service-secret-1"


def test_remove_needs_the_name_typed_and_force_for_mailboxes(superadmin, node, domain, directory):
    r = superadmin.post(f"/directories/{directory}/remove", {"confirm": "something-else"}, follow_redirects=True)
    assert "confirm" in flashed_errors(text(r))[0] or "подтверждения" in flashed_errors(text(r))[0]
    assert directory in [d["name"] for d in node.app.directories.list()]
    fname = f"keep-{directory}"
    node.app.ldap_filters.add(fname, directory, "(cn=x)")
    r = superadmin.post(f"/directories/{directory}/remove", {"confirm": directory}, follow_redirects=True)
    assert f"used by LDAP filter(s) {fname}" in flashed_errors(text(r))[0]
    node.app.ldap_filters.remove(fname)
    r = superadmin.post(f"/directories/{directory}/remove", {"confirm": directory.upper()})
    assert r.status_code == 302
    assert directory not in [d["name"] for d in node.app.directories.list()]
    assert audit_rows(node, "ldap_domain.remove", directory)[-1].source == "panel"
    assert superadmin.get(f"/directories/{directory}/edit", follow_redirects=True).status_code == 200


def test_service_update_and_cli_set(node, directory):
    from rupost.cli import main

    # None keeps, an empty filter clears, an empty base DN is an error (not a silent keep)
    out = node.app.directories.update(directory, user_filter="", timeout=None)
    assert out["user_filter"] == "" and out["timeout"] == 3
    with pytest.raises(Exception, match="base DN is empty"):
        node.app.directories.update(directory, base_dn="")
    assert audit_rows(node, "ldap_domain.update", directory)[-1].details["changed"] == ["user_filter"]
    runner = CliRunner()
    root = ["--root", str(node.root)]
    r = runner.invoke(main, root + ["ldap-domains", "set", directory, "--group-filter", "(cn=staff)", "--timeout", "9"])
    assert r.exit_code == 0, r.output
    shown = node.app.directories.show(directory)
    assert (shown["group_filter"], shown["timeout"], shown["base_dn"]) == ("(cn=staff)", 9,
                                                                           "cn=users,dc=corp,dc=example")
    r = runner.invoke(main, root + ["ldap-domains", "set", directory, "--user-filter", "(cn=*"])
    assert r.exit_code != 0 and "unclosed" in r.output
    assert node.app.directories.get_settings(directory).bind_password == "service-secret-1"


# ------------------------------------------------------------------ named filters and LDAP administrators
def test_filters_and_ldap_administrators_against_a_real_slapd(superadmin, make_client, node, domain, workdir):
    from rupost.services.directories import ldap_bind_authenticator
    from support.slapd import TempSlapd

    ad = TempSlapd(workdir / f"slapd-pages-{uuid.uuid4().hex[:6]}", "ad").start()
    name = f"ad{uuid.uuid4().hex[:6]}"
    tag = uuid.uuid4().hex[:6]
    authenticator = ldap_bind_authenticator(node.app)
    try:
        sales, _ = ad.add_user(f"s{tag}", f"s{tag}@{domain}", "Pw-sales-123", department=f"Sales{tag}")
        boss, _ = ad.add_user(f"b{tag}", f"b{tag}@{domain}", "Pw-boss-1234", department=f"Other{tag}")
        admins_group = ad.add_group(f"mail-admins-{tag}", [boss])
        node.app.directories.add(name, "ad", [ad.ldaps_uri], ad.users_dn, ad.service_dn, ad.service_password,
                                 ca_pem=ad.ca_pem, mail_domains=[domain], timeout=5)
        # --- filters: bad ones (LDAP metacharacters, HTML) refused with the problem named, nothing stored
        for bad in INJECTIONS:
            r = superadmin.post("/directories/filters/add", {"name": f"bad-{tag}", "ldap_domain": name,
                                                             "filter": bad}, follow_redirects=True)
            errors = flashed_errors(text(r))
            assert errors and "LDAP filter" in errors[0], (bad, errors)
            assert "<script>" not in text(r) and "<img" not in text(r)
        for bad_name in ('<script>alert(1)</script>', "../x", "A B"):
            r = superadmin.post("/directories/filters/add", {"name": bad_name, "ldap_domain": name,
                                                             "filter": "(cn=*)"}, follow_redirects=True)
            assert "invalid filter name" in flashed_errors(text(r))[0] and "<script>" not in text(r)
        assert not [f for f in node.app.ldap_filters.list() if f["ldap_domain"] == name]
        # --- add, preview, edit, remove
        fname = f"sales-{tag}"
        r = superadmin.post("/directories/filters/add", {"name": fname, "ldap_domain": name,
                                                         "filter": f"(department=Sales{tag})",
                                                         "description": "<b>sales</b> team"}, follow_redirects=True)
        assert not flashed_errors(text(r)) and "&lt;b&gt;sales&lt;/b&gt; team" in text(r)
        assert audit_rows(node, "ldap_filter.add", fname)[-1].source == "panel"
        r = superadmin.post("/directories/filters/test", {"name": fname})
        preview = text(r)[text(r).index('id="filter-preview"'):]
        assert f"s{tag}@{domain}" in preview and f"b{tag}@{domain}" not in preview
        # a value with metacharacters escaped the RFC 4515 way is a literal: it matches nobody
        r = superadmin.post("/directories/filters/test", {"ldap_domain": name, "filter": "(department=\\2a)"})
        preview = text(r)[text(r).index('id="filter-preview"'):]
        assert 'id="filter-error"' not in preview and f"s{tag}@{domain}" not in preview
        r = superadmin.post("/directories/filters/test", {"ldap_domain": name, "filter": "*)(uid=*"})
        assert 'id="filter-error"' in text(r) and "must be enclosed in parentheses" in text(r)
        r = superadmin.post(f"/directories/filters/{fname}/set", {"filter": f"(department=Other{tag})"},
                            follow_redirects=True)
        assert not flashed_errors(text(r))
        assert audit_rows(node, "ldap_filter.set", fname)[-1].source == "panel"
        r = superadmin.post(f"/directories/filters/{fname}/set", {"filter": "(cn=*)(|(uid=*"}, follow_redirects=True)
        assert flashed_errors(text(r))
        assert [f["filter"] for f in node.app.ldap_filters.list() if f["name"] == fname] == [f"(department=Other{tag})"]
        r = superadmin.post("/directories/filters/test", {"name": fname})
        preview = text(r)[text(r).index('id="filter-preview"'):]
        assert f"b{tag}@{domain}" in preview and f"s{tag}@{domain}" not in preview
        superadmin.post(f"/directories/filters/{fname}/remove")
        assert fname not in [f["name"] for f in node.app.ldap_filters.list()]
        assert audit_rows(node, "ldap_filter.remove", fname)[-1].source == "panel"

        # --- LDAP administrators: bad input first, then a group mapping that lets its member log in
        for data, problem in [
                ({"kind": "group", "value": '<script>alert(1)</script>', "role": "superadmin"}, "distinguished name"),
                ({"kind": "user", "value": "x", "role": "domain_admin"}, "needs at least one mail domain"),
                ({"kind": "user", "value": "x", "role": "root"}, "invalid role"),
                ({"kind": "printer", "value": "x", "role": "readonly"}, "map a 'group'"),
                ({"kind": "user", "value": "   ", "role": "readonly"}, "login is empty")]:
            r = superadmin.post("/admins/ldap-mappings/add", {"directory": name, **data}, follow_redirects=True)
            errors = flashed_errors(text(r))
            assert errors and problem in errors[0], (data, errors)
            assert "<script>alert" not in text(r)
        r = superadmin.post("/admins/ldap-mappings/add", {"directory": "no-such-dir", "kind": "user", "value": "x",
                                                          "role": "readonly"}, follow_redirects=True)
        assert "does not exist" in flashed_errors(text(r))[0]
        assert not [m for m in node.app.directories.admin_map_list() if m["directory"] == name]
        r = superadmin.post("/admins/ldap-mappings/add", {"directory": name, "kind": "group", "value": admins_group,
                                                          "role": "domain_admin", "domains": domain},
                            follow_redirects=True)
        assert not flashed_errors(text(r)) and admins_group in text(r)
        superadmin.post("/admins/ldap-mappings/add", {"directory": name, "kind": "user", "value": "*)(uid=*",
                                                      "role": "readonly"})
        mapped = [(m["kind"], m["value"], m["role"], m["domains"]) for m in node.app.directories.admin_map_list()
                  if m["directory"] == name]
        assert mapped == [("group", admins_group, "domain_admin", [domain]), ("user", "*)(uid=*", "readonly", [])]
        assert audit_rows(node, "ldap_admin.map", f"{name}:group:{admins_group}")[-1].source == "panel"
        node.app.admins.register_authenticator(authenticator)
        # the group's member logs in with the directory password and is a domain admin of the domain
        member = make_client()
        member.login(f"b{tag}@{domain}", "Pw-boss-1234")
        assert member.get("/").status_code == 200 and member.get("/directories/").status_code == 403
        assert member.get(f"/mailboxes/?domain={domain}").status_code == 200
        # the other user is not in the group; the literal '*)(uid=*' mapping matches no one
        make_client().login(f"s{tag}@{domain}", "Pw-sales-123", expect=401)
        make_client().login("*)(uid=*", "Pw-sales-123", expect=401)
        # removing the mapping ends it
        superadmin.post("/admins/ldap-mappings/remove", {"directory": name, "kind": "group", "value": admins_group})
        superadmin.post("/admins/ldap-mappings/remove", {"directory": name, "kind": "user", "value": "*)(uid=*"})
        assert not [m for m in node.app.directories.admin_map_list() if m["directory"] == name]
        assert audit_rows(node, "ldap_admin.unmap", f"{name}:group:{admins_group}")[-1].source == "panel"
        make_client().login(f"b{tag}@{domain}", "Pw-boss-1234", expect=401)
        r = superadmin.post("/admins/ldap-mappings/remove", {"directory": name, "kind": "group", "value": admins_group},
                            follow_redirects=True)
        assert "no mapping" in flashed_errors(text(r))[0]

        # --- write-back: the form (the write-back account's bind is tested) and the dry run's table
        alias = f"wb.s{tag}@{domain}"
        node.app.directories.sync(name)
        node.app.aliases.add(alias, [f"s{tag}@{domain}"])
        r = superadmin.post(f"/directories/{name}/writeback/set", {
            "enabled": "1", "pattern": "{login}", "mail_domain": domain, "bind_dn": ad.root_dn,
            "bind_password": ad.root_password}, follow_redirects=True)
        assert not flashed_errors(text(r)) and node.app.directories.show(name)["writeback"]["bind_dn"] == ad.root_dn
        r = superadmin.post(f"/directories/{name}/writeback/plan", {})
        assert f"+ proxyAddresses: smtp:{alias}" in text(r)[text(r).index('id="writeback-plan"'):]
        node.app.aliases.remove(alias)
    finally:
        node.app.admins.unregister_authenticator(authenticator)
        try:
            node.app.directories.remove(name, force=True)
        except Exception:
            pass
        ad.destroy()


# ------------------------------------------------------------------ dashboard tiles
def test_dashboard_queue_and_storage_tiles_and_an_unreachable_node(superadmin, readonly, admin_factory, make_client,
                                                                   node, domain):
    dashboard._queue_cache.clear()
    page = text(superadmin.get("/"))
    tile = page[page.index('id="queue-sizes"'):]
    tile = tile[:tile.index("</table>")]
    assert node.config.node_name in tile
    assert "queue not readable" not in tile and "очередь недоступна" not in tile
    storage = page[page.index('id="storage"'):]
    assert str(node.layout.mail_storage) in storage and "%" in storage
    # a second node whose queue is not on storage this node can read: said so, the page still works
    ghost = f"ghost-{uuid.uuid4().hex[:6]}"
    with node.app.dbs.session("main") as s:
        s.add(Node(name=ghost, fqdn=f"{ghost}.test", address="192.0.2.7", state="in_service", components={},
                   admin_state="enabled", queue_directory="/nonexistent/ghost/queue"))
    try:
        dashboard._queue_cache.clear()
        r = superadmin.get("/")
        assert r.status_code == 200
        tile = text(r)[text(r).index('id="queue-sizes"'):]
        tile = tile[:tile.index("</table>")]
        row = tile[tile.index(ghost):]
        row = row[:row.index("</tr>")]
        assert "очередь недоступна" in row and "did not answer" in row  # no agent took the request
    finally:
        with node.app.dbs.session("main") as s:
            s.execute(delete(Node).where(Node.name == ghost))
        dashboard._queue_cache.clear()
    assert 'id="queue-sizes"' in text(readonly.get("/")) and "/quota/measure" not in text(readonly.get("/"))
    scoped = make_client()
    scoped.login(admin_factory("domain_admin", [domain]))
    page = text(scoped.get("/"))
    assert 'id="queue-sizes"' not in page and 'id="storage"' not in page and 'id="quota"' in page


def test_quota_use_is_measured_from_dovecot_and_shown_per_scope(superadmin, admin_factory, make_client, node,
                                                                domain, mailbox):
    big, big_pw = mailbox(f"big{uuid.uuid4().hex[:4]}", quota="10M")
    small, small_pw = mailbox(f"small{uuid.uuid4().hex[:4]}", quota="0")
    for to, password, size in ((big, big_pw, 600_000), (small, small_pw, 20)):
        subject = f"quota-{uuid.uuid4().hex[:6]}"
        with smtps(node.ports["submissions"]) as client:
            client.login(to, password)
            assert client.send_message(message(to, to, subject, "x" * size + "\n")) == {}
        wait_for_subject(node.ports["imaps"], to, password, subject)
    unused, _ = mailbox(f"unused{uuid.uuid4().hex[:4]}", quota="1M")
    result = QuotaUsageService(node.app).measure(wait=300)  # after a background one the dashboard started
    assert result["complete"] and result["measured"] >= 3 and not result["errors"], result
    # a mailbox that never received mail is recorded as empty, and dovecot was not made to create its Maildir
    assert not (node.layout.mail_storage / domain / unused.split("@")[0]).exists()
    summary = QuotaUsageService(node.app).summary([domain])
    largest = {m["address"]: m for m in summary["largest"]}
    assert list(largest) == [big, small, unused] and largest[unused]["used_bytes"] == 0
    assert 600_000 <= largest[big]["used_bytes"] < 700_000 and largest[big]["messages"] == 1
    assert largest[big]["quota_bytes"] == 10 * 2**20 and 5 < largest[big]["percent"] < 7
    assert summary["mailboxes"] == summary["measured"] == 3 and summary["unlimited"] == 1
    assert summary["quota_total_bytes"] == 11 * 2**20
    assert summary["used_total_bytes"] == largest[big]["used_bytes"] + largest[small]["used_bytes"]
    # the domain's administrator sees its mailboxes in the tile; another domain's does not
    own, other = make_client(), make_client()
    own.login(admin_factory("domain_admin", [domain]))
    elsewhere = f"q{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(elsewhere)
    other.login(admin_factory("domain_admin", [elsewhere]))
    page = text(own.get("/"))
    table = page[page.index('id="largest-mailboxes"'):]
    assert table.index(big) < table.index(small)
    assert big not in text(other.get("/")) and 'id="largest-mailboxes"' not in text(other.get("/"))
    # a superadministrator's "Measure now": a background job that ends with what it measured
    r = superadmin.post("/quota/measure")
    assert r.status_code == 302 and "/jobs/" in r.headers["Location"]
    from test_mailqueues import wait_for

    def finished():
        page = text(superadmin.get(r.headers["Location"]))
        return page if 'http-equiv="refresh"' not in page else None

    job_page = wait_for(finished, 60, "the quota measurement job")
    assert 'id="job-result"' in job_page and "mailbox(es) measured" in job_page, job_page[-1500:]
    assert audit_rows(node, "quota_usage.measure")[-1].source == "panel"
    # a deleted mailbox leaves the measurement with it
    node.app.mailboxes.remove(small)
    assert small not in [m["address"] for m in QuotaUsageService(node.app).summary([domain])["largest"]]


def test_writeback_form_refusals_settings_and_dry_run_errors(superadmin, node, directory):
    """The write-back form on the LDAP domain page: its refusals are the service's messages, the
    password is never shown back, the dry run reports why it cannot run, disabling is audited.
    (What the write-back writes is tested against Samba AD and 389-ds: tests/test_samba_ad.py,
    tests/test_ds389.py.)"""
    d = node.app.directories
    page = text(superadmin.get(f"/directories/{directory}/edit"))
    assert 'id="writeback-settings"' in page and 'id="writeback-dry-run"' not in page  # not enabled yet
    r = superadmin.post(f"/directories/{directory}/writeback/plan", {}, follow_redirects=True)
    assert "write-back is not enabled" in flashed_errors(text(r))[0]
    form = {"enabled": "1", "pattern": "{login}", "mail_domain": d.show(directory)["mail_domains"][0],
            "bind_dn": "uid=rupost,dc=corp,dc=example", "bind_password": "wb-secret-1"}
    r = superadmin.post(f"/directories/{directory}/writeback/set", form, follow_redirects=True)
    assert "separate account" in flashed_errors(text(r))[0]  # the service account itself
    r = superadmin.post(f"/directories/{directory}/writeback/set", {**form, "pattern": "{nickname}"},
                        follow_redirects=True)
    assert "write-back pattern '{nickname}'" in flashed_errors(text(r))[0]
    form["bind_dn"] = "uid=rupost-wb,dc=corp,dc=example"
    r = superadmin.post(f"/directories/{directory}/writeback/set", form, follow_redirects=True)
    assert "no server could be used" in flashed_errors(text(r))[0]  # the bind is tested: nothing listens
    assert d.show(directory)["writeback"] == {}
    d.writeback_set(directory, bind_dn=form["bind_dn"], bind_password="wb-secret-1", check=False)
    page = text(superadmin.get(f"/directories/{directory}/edit"))
    assert 'id="writeback-dry-run"' in page and 'id="writeback-run"' in page and "uid=rupost-wb" in page
    assert "wb-secret-1" not in page
    r = superadmin.post(f"/directories/{directory}/writeback/plan", {}, follow_redirects=True)
    assert "no server could be used" in flashed_errors(text(r))[0]
    superadmin.post(f"/directories/{directory}/writeback/set", {"enabled": ""})
    assert d.show(directory)["writeback"] == {}
    assert audit_rows(node, "ldap_domain.writeback.disable", directory)[-1].source == "panel"


def test_every_new_text_is_translated_and_pages_render_in_english(superadmin, node, directory):
    from rupost.panel.catalogue_ru import RU

    page = text(superadmin.get(f"/directories/{directory}/edit"))
    assert RU["Remove this LDAP domain"] in page
    superadmin.post("/language", {"lang": "en"})
    try:
        for path in ("/", "/directories/", f"/directories/{directory}/edit", "/admins/"):
            r = superadmin.get(path)
            assert r.status_code == 200 and "RuPost" in text(r), path
        assert "Remove this LDAP domain" in text(superadmin.get(f"/directories/{directory}/edit"))
        assert "Dry run: show the planned changes" not in text(superadmin.get(f"/directories/{directory}/edit"))
        assert "write-back enabled" in text(superadmin.get(f"/directories/{directory}/edit"))
        assert "LDAP administrators" in text(superadmin.get("/admins/"))
    finally:
        superadmin.post("/language", {"lang": "ru"})


def test_unknown_or_hostile_names_in_the_path_are_reported_escaped(superadmin, node):
    hostile = '<img src=x onerror=alert(1)>'
    r = superadmin.get(f"/directories/{hostile}/edit", follow_redirects=True)
    assert r.status_code == 200 and "does not exist" in flashed_errors(text(r))[0]
    assert "<img src=x" not in text(r)
    for path in (f"/directories/{hostile}/edit", f"/directories/filters/{hostile}/set",
                 f"/directories/filters/{hostile}/remove"):
        r = superadmin.post(path, {"filter": "(cn=*)", "uris": "ldaps://x.test"}, follow_redirects=True)
        assert r.status_code == 200 and flashed_errors(text(r)), path
        assert "<img src=x" not in text(r), path
    r = superadmin.post(f"/directories/{hostile}/remove", {"confirm": hostile}, follow_redirects=True)
    assert "does not exist" in flashed_errors(text(r))[0] and "<img src=x" not in text(r)
