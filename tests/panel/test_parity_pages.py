"""Panel pages that close the parity table's gaps: checks and monitoring thresholds, security
blocks, backups, a domain's DKIM key and DNS records, an LDAP domain's Kerberos keytab; in both
languages, with the roles and domain scope of the other pages, and journaled like them."""
from __future__ import annotations

import datetime as dt
import re
import time
import uuid

import pytest

from rupost.db.models import Node, utcnow

from .conftest import audit_rows, text


def wait_done(client, response):
    assert response.status_code == 302, text(response)[:500]
    job_id = int(re.search(r"/jobs/(\d+)", response.headers["Location"]).group(1))
    for _ in range(1200):
        page = text(client.get(f"/jobs/{job_id}"))
        status = re.search(r'id="job-status"[^>]*>[^<]*<strong>([^<]+)<', page).group(1)
        if status in ("done", "failed", "выполнено", "ошибка"):
            return page
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


@pytest.fixture
def thresholds_kept(node):
    before = node.app.settings.thresholds()
    yield
    node.app.settings.set_thresholds({k: v["value"] for k, v in before.items() if v["set"]},
                                     [k for k, v in before.items() if not v["set"]])


def test_checks_page_runs_them_and_sets_thresholds(node, superadmin, readonly, admin_factory, make_client,
                                                   domain, thresholds_kept):
    superadmin.post("/language", {"lang": "en"})
    assert "Monitoring thresholds" in text(superadmin.get("/checks/"))
    page = wait_done(superadmin, superadmin.post("/checks/run"))
    assert "disk:" in page and node.app.checks.last_states()  # recorded, as rupost check does
    listed = text(superadmin.get("/checks/"))
    assert next(iter(node.app.checks.last_states())) in listed

    form = {k: "" for k in node.app.settings.thresholds()}
    refused = superadmin.post("/checks/thresholds", {**form, "monitor_queue_warning": "900",
                                                     "monitor_queue_critical": "800"}, follow_redirects=True)
    assert "must be below" in text(refused)
    assert node.app.settings.thresholds()["monitor_queue_warning"]["set"] is False  # none stored
    superadmin.post("/checks/thresholds", {**form, "monitor_queue_warning": "700"})
    assert node.app.settings.thresholds()["monitor_queue_warning"] == {"value": 700, "default": 500, "set": True}
    assert audit_rows(node, "settings.set", "monitor_queue_warning")[-1].source == "panel"
    superadmin.post("/checks/thresholds", form)  # emptied: back to the default
    assert node.app.settings.thresholds()["monitor_queue_warning"]["set"] is False

    assert readonly.get("/checks/").status_code == 200
    assert readonly.post("/checks/run").status_code == 403
    assert readonly.post("/checks/thresholds", {**form, "monitor_queue_warning": "600"}).status_code == 403
    scoped = make_client()
    scoped.login(admin_factory("domain_admin", [domain]))
    assert scoped.get("/checks/").status_code == 403
    ru = make_client()
    ru.login(admin_factory("superadmin"))
    assert "Пороги мониторинга" in text(ru.get("/checks/"))


def test_security_page_lists_and_lifts_blocks(node, superadmin, readonly):
    account = f"blk{uuid.uuid4().hex[:6]}@nowhere.test"
    for _ in range(100):  # bounded: the account's failure limit is far below
        if node.app.blocklist.record_failure("", account, "imap"):
            break
    assert any(b["value"] == account for b in node.app.blocklist.list())
    assert account in text(readonly.get("/security/"))
    assert readonly.post("/security/unblock", {"value": account}).status_code == 403
    superadmin.post("/security/unblock", {"value": account})
    assert not any(b["value"] == account for b in node.app.blocklist.list())
    assert account not in text(superadmin.get("/security/"))
    assert audit_rows(node, "security.unblock", f"account {account}")[-1].source == "panel"


def test_backups_page_backs_up_and_lists(node, superadmin, readonly, admin_factory, make_client, domain):
    before = len(node.app.backups.list())
    page = wait_done(superadmin, superadmin.post("/backups/create"))
    assert "db-main.dump" in page and "config.json" in page
    backups = node.app.backups.list()
    assert len(backups) == before + 1 and backups[0]["complete"]
    assert backups[0]["name"] in text(readonly.get("/backups/"))
    assert audit_rows(node, "backup", backups[0]["path"])[-1].source == "panel"
    assert readonly.post("/backups/create").status_code == 403
    scoped = make_client()
    scoped.login(admin_factory("domain_admin", [domain]))
    assert scoped.get("/backups/").status_code == 403


def test_dkim_and_dns_page_within_the_domains_of_the_administrator(node, admin_factory, make_client, domain):
    other = f"o{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(other)
    scoped = make_client()
    scoped.login(admin_factory("domain_admin", [domain]))
    scoped.post("/language", {"lang": "en"})
    page = text(scoped.get(f"/domains/{domain}/dns"))
    assert "No DKIM key yet" in page and f"_dmarc.{domain}." in page
    scoped.post(f"/domains/{domain}/dkim/generate", {"selector": "panel1"})
    key = node.app.dkim.show(domain)
    assert key["selector"] == "panel1"
    assert audit_rows(node, "dkim.generate", domain)[-1].source == "panel"
    page = text(scoped.get(f"/domains/{domain}/dns"))
    assert f"panel1._domainkey.{domain}." in page and key["txt"][:40] in page.replace("&#34;", '"')
    scoped.post(f"/domains/{domain}/dkim/rotate", {"selector": "panel2"})
    assert node.app.dkim.show(domain)["selector"] == "panel2"
    assert scoped.get(f"/domains/{other}/dns").status_code == 403
    assert scoped.post(f"/domains/{other}/dkim/generate", {}).status_code == 403
    assert node.app.dkim.active_key(other) is None
    reader = make_client()
    reader.login(admin_factory("readonly"))
    assert reader.get(f"/domains/{domain}/dns").status_code == 200
    assert reader.post(f"/domains/{domain}/dkim/rotate", {}).status_code == 403
    assert f"/domains/{domain}/dns" in text(scoped.get("/domains/"))


def test_resources_page_within_the_domains_of_the_administrator(node, admin_factory, make_client, domain, mailbox):
    owner, _ = mailbox("owner")
    scoped = make_client()
    scoped.login(admin_factory("domain_admin", [domain]))
    scoped.post("/language", {"lang": "en"})
    scoped.post("/resources/add", {"address": f"hall@{domain}", "kind": "room", "display_name": "Hall",
                                   "multiple_bookings": "1", "owner": owner})
    assert node.app.resources.show(f"hall@{domain}")["owner"] == owner
    assert audit_rows(node, "resource.add", f"hall@{domain}")[-1].source == "panel"
    assert f"hall@{domain}" in text(scoped.get("/resources/"))
    scoped.post(f"/resources/hall@{domain}/set", {"multiple_bookings": "3", "owner": "", "display_name": "Hall"})
    assert node.app.resources.show(f"hall@{domain}")["multiple_bookings"] == 3
    bad = scoped.post(f"/resources/hall@{domain}/set", {"multiple_bookings": "x", "owner": ""},
                      follow_redirects=True)
    assert "invalid number of simultaneous bookings" in text(bad)
    assert scoped.post("/resources/add", {"address": "hall@example.org"}).status_code == 403
    reader = make_client()
    reader.login(admin_factory("readonly"))
    assert f"hall@{domain}" in text(reader.get("/resources/"))
    assert reader.post(f"/resources/hall@{domain}/remove").status_code == 403
    scoped.post(f"/resources/hall@{domain}/remove")
    assert node.app.resources.list(domain) == []
    ru = make_client()
    ru.login(admin_factory("domain_admin", [domain]))
    assert "Добавить ресурс" in text(ru.get("/resources/"))


def test_impersonation_and_push_page(node, superadmin, readonly, admin_factory, make_client, domain):
    name, push = f"imp{uuid.uuid4().hex[:6]}", f"push{uuid.uuid4().hex[:6]}"
    superadmin.post("/language", {"lang": "en"})
    try:
        superadmin.post("/integrations/impersonation/add", {"name": name, "password": "Imp-pw-123456",
                                                            "domains": domain, "description": "archiver"})
        assert {a["name"]: a for a in node.app.impersonation.list()}[name]["domains"] == [domain]
        assert audit_rows(node, "impersonation.add", name)[-1].source == "panel"
        superadmin.post(f"/integrations/impersonation/{name}/disable")
        assert {a["name"]: a for a in node.app.impersonation.list()}[name]["enabled"] is False
        page = text(superadmin.post("/integrations/push/add", {"name": push, "url": "ftp://nowhere"},
                                    follow_redirects=True))
        assert "is not an http:// or https:// URL" in page
        superadmin.post("/integrations/push/add", {"name": push, "url": "http://127.0.0.1:9/x", "domains": domain})
        assert push in {e["name"] for e in node.app.push.endpoints()}
        page = text(superadmin.post(f"/integrations/push/{push}/test", follow_redirects=True))
        assert f"push endpoint {push}" in page and "failed" in page  # nothing listens on port 9
        listing = text(readonly.get("/integrations/"))
        assert name in listing and push in listing
        assert readonly.post(f"/integrations/push/{push}/remove").status_code == 403
        assert readonly.post(f"/integrations/impersonation/{name}/remove").status_code == 403
    finally:
        superadmin.post(f"/integrations/impersonation/{name}/remove")
        superadmin.post(f"/integrations/push/{push}/remove")
    assert name not in {a["name"] for a in node.app.impersonation.list()}
    assert push not in {e["name"] for e in node.app.push.endpoints()}
    scoped = make_client()
    scoped.login(admin_factory("domain_admin", [domain]))
    assert scoped.get("/integrations/").status_code == 403


def test_nodes_removed_and_builtin_certificates_regenerated(node, superadmin, readonly):
    gone = f"n{uuid.uuid4().hex[:6]}"
    with node.app.dbs.session("main") as s:  # a node that left the cluster an hour ago
        s.add(Node(name=gone, fqdn=f"{gone}.rupost.test", address="127.0.0.8", state="in_service",
                   last_heartbeat=utcnow() - dt.timedelta(hours=1)))
    assert readonly.post(f"/nodes/{gone}/remove").status_code == 403
    assert gone in text(superadmin.get("/nodes/"))
    superadmin.post(f"/nodes/{gone}/remove")
    assert gone not in {n["name"] for n in node.app.nodes.list()}
    assert audit_rows(node, "node.remove", gone)[-1].source == "panel"

    builtin = next(c for c in node.app.certificates.list() if c["builtin"] and c["type"] == "mail")
    before = node.app.certificates.show(builtin["name"])["sha256"]
    assert readonly.post("/certificates/regenerate", {"name": builtin["name"]}).status_code == 403
    superadmin.post("/certificates/regenerate", {"name": builtin["name"]})
    assert node.app.certificates.show(builtin["name"])["sha256"] != before
    assert audit_rows(node, "cert.regenerate_builtin", builtin["name"])[-1].source == "panel"


def test_capacity_page_estimates_stores_and_keeps_statistics(node, superadmin, readonly, admin_factory,
                                                             make_client, domain):
    from rupost.services.settings import TEMPLATE_PARAMETERS

    superadmin.post("/language", {"lang": "en"})
    page = text(superadmin.get("/capacity/?mailboxes=2000&sessions_per_user=2"))
    wanted = node.app.sizing.estimate(2000, 2.0)
    assert "Memory at full load: about {} MiB".format(wanted["memory"]["total_mib"]) in page
    assert "is not a number" in text(superadmin.get("/capacity/?mailboxes=lots"))
    values = dict(node.app.settings.get(TEMPLATE_PARAMETERS, {}) or {})
    retention = node.app.stats.retention_days()
    try:
        superadmin.post("/capacity/apply", {"mailboxes": "2000", "sessions_per_user": "2"})
        stored = node.app.settings.get(TEMPLATE_PARAMETERS, {})
        assert all(stored[k] == v for k, v in wanted["parameters"].items())
        assert audit_rows(node, "template.parameters")[-1].source == "panel"
        superadmin.post("/capacity/retention", {"days": "45"})
        assert node.app.stats.retention_days() == 45
        assert "invalid retention" in text(superadmin.post("/capacity/retention", {"days": "0"},
                                                           follow_redirects=True))
        assert readonly.post("/capacity/retention", {"days": "46"}).status_code == 403
        assert readonly.post("/capacity/apply", {"mailboxes": "10"}).status_code == 403
    finally:
        node.app.settings.set(TEMPLATE_PARAMETERS, values)
        node.app.stats.set_retention(retention)
    assert node.app.stats.retention_days() == retention
    scoped = make_client()
    scoped.login(admin_factory("domain_admin", [domain]))
    assert scoped.get("/capacity/").status_code == 403


# ---------------------------------------------------------------- issue 30's last panel gaps
def test_ldap_domain_page_shows_accounts_gal_and_sets_the_safety_share(node, superadmin, readonly, admin_factory,
                                                                        make_client, domain):
    from sqlalchemy import select

    from rupost.db.directory_models import DirectoryAccount
    from rupost.db.models import Mailbox

    name = f"pg{uuid.uuid4().hex[:6]}"
    # an LDAP domain nobody answers for (added unchecked), with the accounts a sync would have recorded
    node.app.directories.add(name, "ad", ["ldap://127.0.0.1:9"], "dc=corp,dc=test", "cn=svc,dc=corp,dc=test", "pw",
                             security="plain", allow_plain=True, check=False)
    node.app.mailboxes.add(f"anna@{domain}", "Anna-pw-1234567")
    with node.app.dbs.session("data") as s:
        mailbox_id = s.scalar(select(Mailbox.id).where(Mailbox.address == f"anna@{domain}"))
        s.add(DirectoryAccount(directory=name, stable_id="1", mailbox_id=mailbox_id, login="anna",
                               mail=f"anna@{domain}", state="active", gal={"display_name": "Anna Petrova",
                                                                          "title": "Engineer"}))
        s.add(DirectoryAccount(directory=name, stable_id="2", login="boris", mail=f"boris@{domain}",
                               state="disabled", state_reason="disabled in the directory"))
    share = node.app.directories.max_drop_share()
    try:
        superadmin.post("/language", {"lang": "en"})
        assert f'/directories/{name}/accounts' in text(superadmin.get("/directories/"))
        page = text(superadmin.get(f"/directories/{name}/accounts"))
        assert f"anna@{domain}" in page and f"boris@{domain}" in page and "Anna Petrova" in page
        assert f"{share * 100:g} %" in page
        page = text(superadmin.get(f"/directories/{name}/accounts?state=disabled&search=nobody-{name}"))
        accounts = page.split('id="directory-accounts"')[1].split("</table>")[0]
        assert f"boris@{domain}" in accounts and f"anna@{domain}" not in accounts
        assert "Nobody found." in page
        superadmin.post("/language", {"lang": "ru"})
        assert "Глобальная адресная книга" in text(superadmin.get(f"/directories/{name}/accounts"))

        refused = superadmin.post("/directories/max-drop-share", {"share_percent": "150", "directory": name},
                                  follow_redirects=True)
        assert "between 0 and 1" in text(refused) and node.app.directories.max_drop_share() == share
        superadmin.post("/directories/max-drop-share", {"share_percent": "35", "directory": name})
        assert node.app.directories.max_drop_share() == 0.35
        assert audit_rows(node, "settings.set", "directories.max_drop_share")[-1].source == "panel"
        assert readonly.get(f"/directories/{name}/accounts").status_code == 200
        assert readonly.post("/directories/max-drop-share", {"share_percent": "50"}).status_code == 403
        scoped = make_client()
        scoped.login(admin_factory("domain_admin", [domain]))
        assert scoped.get(f"/directories/{name}/accounts").status_code == 403
    finally:
        node.app.directories.set_max_drop_share(share)
        node.app.directories.remove(name, force=True)
        node.app.mailboxes.remove(f"anna@{domain}")


def test_dns_check_srs_and_template_export_and_diff_pages(node, superadmin, readonly, admin_factory, make_client,
                                                         domain):
    from markupsafe import escape
    from sqlalchemy import delete

    from rupost.db.models import Setting
    from rupost.services.srs import SRS_PENDING
    from support.dns_zone import Zone

    superadmin.post("/language", {"lang": "en"})
    zone = Zone()
    try:
        zone.load([r.zone_line() for r in node.app.dns_records.records(domain)["records"] if r.type == "MX"])
        scoped = make_client()
        scoped.login(admin_factory("domain_admin", [domain]))
        scoped.post("/language", {"lang": "en"})
        page = text(scoped.post(f"/domains/{domain}/dns/check", {"nameserver": f"127.0.0.1:{zone.port}"}))
        checked = page.split('id="dns-check"')[1].split("</table>")[0]
        assert re.search(r"<td>MX</td><td><code>[^<]+</code></td><td class=\"ok\">present", checked)
        assert "missing" in checked and "records missing or wrong" in page
        page = text(scoped.post(f"/domains/{domain}/dns/check", {"nameserver": "ns.example.org"}))
        assert 'id="dns-check-error"' in page
        assert scoped.post("/domains/example.org/dns/check", {"nameserver": f"127.0.0.1:{zone.port}"}
                           ).status_code == 403
        assert readonly.post(f"/domains/{domain}/dns/check", {"nameserver": f"127.0.0.1:{zone.port}"}
                             ).status_code == 200  # it reads only
    finally:
        zone.close()

    with node.app.dbs.session("main") as s:
        pending_before = (row.value if (row := s.get(Setting, SRS_PENDING)) is not None else None)
        s.execute(delete(Setting).where(Setting.key == SRS_PENDING))
    try:
        page = text(superadmin.get("/settings/"))
        assert f"{node.app.srs.status()['secrets']}" in page.split('id="srs-state"')[1].split("</ul>")[0]
        assert readonly.post("/settings/srs/rotate").status_code == 403
        page = text(superadmin.post("/settings/srs/rotate", follow_redirects=True))
        assert node.app.srs.status()["pending_signs_from"] is not None and "the new secret signs from" in page
        assert audit_rows(node, "srs.rotate", SRS_PENDING)[-1].source == "panel"
        assert "already under way" in text(superadmin.post("/settings/srs/rotate", follow_redirects=True))
    finally:
        with node.app.dbs.session("main") as s:
            s.execute(delete(Setting).where(Setting.key == SRS_PENDING))
            if pending_before is not None:
                s.add(Setting(key=SRS_PENDING, value=pending_before))

    active = next(t for t in node.app.templates.list() if t["active"])
    ref = f"{active['name']}@{active['version']}"
    exported = readonly.get(f"/templates/export/{active['name']}/{active['version']}")
    assert exported.status_code == 200 and "attachment" in exported.headers["Content-Disposition"]
    assert exported.get_data(as_text=True) == node.app.templates.export(active["name"], active["version"])
    assert readonly.get(f"/templates/export/{active['name']}/0.0.0-nx").status_code == 404
    assert "template-diff" in text(readonly.get(f"/templates/view/{active['name']}/{active['version']}"))
    same = readonly.get(f"/templates/diff?a={ref}&b={ref}")
    assert same.status_code == 200 and "Различий нет." in text(same)  # the read-only client reads Russian
    others = [t for t in node.app.templates.list() if (t["name"], t["version"]) != (active["name"], active["version"])]
    if others:
        other = f"{others[0]['name']}@{others[0]['version']}"
        shown = text(readonly.get(f"/templates/diff?a={ref}&b={other}"))
        expected = node.app.templates.diff(ref, other)
        assert str(escape(expected)) in shown if expected else "Различий нет." in shown
    assert readonly.get(f"/templates/diff?a={ref}&b=nx-template").status_code == 404
    scoped = make_client()
    scoped.login(admin_factory("domain_admin", [domain]))
    assert scoped.get(f"/templates/diff?a={ref}&b={ref}").status_code == 403


def test_ldap_domain_page_sets_kerberos_and_turns_it_off(node, superadmin, readonly, admin_factory, make_client,
                                                         domain, ad_domain, kdc, keytab):
    import base64
    import io

    page, path = f"/directories/{ad_domain}/edit", f"/directories/{ad_domain}/kerberos"
    superadmin.post("/language", {"lang": "en"})
    assert "No keytab" in text(superadmin.get(page))

    def upload(data: bytes, kdcs: str = kdc.address):
        return superadmin.post(f"{path}/set", {"keytab": (io.BytesIO(data), "mail.keytab"), "kdcs": kdcs},
                               follow_redirects=True)

    assert "Choose the keytab file" in text(superadmin.post(f"{path}/set", {"kdcs": kdc.address},
                                                            follow_redirects=True))
    assert "not a keytab" in text(upload(b"\x05\x02 no keytab"))
    assert node.app.directories.show(ad_domain)["kerberos"] == {"enabled": False}  # nothing stored
    shown = text(upload(keytab))
    assert "Keytab checked and saved" in shown and kdc.realm in shown, shown[-3000:]
    host = node.app.settings.client_mail_host() or node.app.settings.mail_host()
    assert f"imap/{host}@{kdc.realm}" in shown and base64.b64encode(keytab).decode()[:40] not in shown
    assert node.app.directories.show(ad_domain)["kerberos"]["realm"] == kdc.realm
    assert audit_rows(node, "ldap_domain.kerberos.set", ad_domain)[-1].source == "panel"
    listed = text(readonly.get("/directories/"))  # read-only administrators see the state in the list
    assert re.search(rf"<td>{ad_domain}</td>(?:(?!</tr>).)*<td class=\"kerberos-state\">{re.escape(kdc.realm)}</td>",
                     listed, re.S)

    # CSRF like every form; read-only and domain administrators cannot touch it
    assert superadmin.post(f"{path}/off", {}, csrf=False).status_code == 400
    domain_admin = make_client()
    domain_admin.login(admin_factory("domain_admin", [domain]))
    for client in (readonly, domain_admin):
        assert client.post(f"{path}/off", {}).status_code == 403
        assert client.post(f"{path}/set", {"keytab": (io.BytesIO(keytab), "k.keytab")}).status_code == 403
    assert node.app.directories.show(ad_domain)["kerberos"]["enabled"] is True

    superadmin.post("/language", {"lang": "ru"})
    assert "Единый вход Kerberos" in text(superadmin.get(page))
    off = text(superadmin.post(f"{path}/off", {}, follow_redirects=True))
    assert "Kerberos выключен" in off and "Keytab не задан" in off
    assert node.app.directories.show(ad_domain)["kerberos"] == {"enabled": False}
    assert audit_rows(node, "ldap_domain.kerberos.off", ad_domain)[-1].source == "panel"
