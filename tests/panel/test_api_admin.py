"""The API's administration resources: LDAP domains against a real slapd, checks, sizing and
backups, template import/validate/activate/parameters, certificate upload, DKIM keys; each
with the roles and domain scope of the panel, and the same state as the CLI's."""
from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import uuid
from pathlib import Path

import pytest
from test_deploy_safety import CUSTOM

from rupost import tls
from rupost.db.models import Node, utcnow
from support.slapd import TempSlapd

from .api_support import make_token
from .conftest import audit_rows
from .test_api import assert_problem, cli, wait_job


@pytest.fixture(scope="module")
def slapd(workdir):
    server = TempSlapd(workdir / f"slapd-api-{uuid.uuid4().hex[:6]}", "ad").start()
    yield server
    server.destroy()


def test_ldap_domain_added_tested_synced_and_removed(node, superapi, api, domain, slapd):
    login = f"u{uuid.uuid4().hex[:6]}"
    slapd.add_user(login, f"{login}@{domain}", "User-pw-123456")
    name = f"ad{uuid.uuid4().hex[:6]}"
    body = {"name": name, "kind": "ad", "uris": [slapd.ldaps_uri], "base_dn": slapd.users_dn,
            "bind_dn": slapd.service_dn, "bind_password": slapd.service_password, "ca_pem": slapd.ca_pem,
            "mail_domains": [domain]}
    wrong = superapi.post("/ldap-domains", json={**body, "bind_password": "wrong-password"})
    assert "not added" in assert_problem(wrong, 409)["detail"]  # the check binds first: nothing stored
    created = superapi.post("/ldap-domains", json=body)
    assert created.status_code == 201, created.get_json()
    assert created.headers["Location"].endswith(f"/ldap-domains/{name}")
    assert "bind_password" not in created.get_json() and created.get_json()["ca"] == "custom"
    shown = superapi.get(f"/ldap-domains/{name}")
    assert shown.get_json()["accounts"] == {}
    assert name in {d["name"] for d in json.loads(cli(node, "ldap-domains", "list", "--json").stdout)}
    report = superapi.post(f"/ldap-domains/{name}/test?sample=3").get_json()
    assert report["ok"] and report["bind"] and [u["login"] for u in report["users"]] == [login]

    job = wait_job(superapi, superapi.post(f"/ldap-domains/{name}/sync", json={}).get_json()["id"])
    assert job["status"] == "done" and job["result"]["created"] == 1, job
    assert node.app.mailboxes.show(f"{login}@{domain}")["enabled"] is True
    assert audit_rows(node, "ldap_domain.sync", name)[-1].actor.startswith("token:")
    accounts = superapi.get(f"/ldap-domains/{name}/accounts?state=active").get_json()["items"]
    assert [(a["login"], a["mail"]) for a in accounts] == [(login, f"{login}@{domain}")]
    assert_problem(superapi.get(f"/ldap-domains/nx{name}/accounts"), 404)
    assert f"{login}@{domain}" in {e["mail"] for e in superapi.get(f"/gal?search={login}").get_json()["items"]}
    share = superapi.get("/settings/ldap-max-drop-share").get_json()["share"]
    try:
        assert superapi.request("PUT", "/settings/ldap-max-drop-share", json={"share": 0.5}).get_json() == {
            "share": 0.5}
        assert_problem(superapi.request("PUT", "/settings/ldap-max-drop-share", json={"share": 2}), 422)
    finally:
        node.app.directories.set_max_drop_share(share)

    assert_problem(superapi.patch(f"/ldap-domains/{name}", json={"timeout": 8},
                                  headers={"If-Match": shown.headers["ETag"]}), 412)  # the sync changed it
    tag = superapi.get(f"/ldap-domains/{name}").headers["ETag"]
    assert superapi.patch(f"/ldap-domains/{name}", json={"timeout": 7}, headers={"If-Match": tag}).status_code == 200
    assert_problem(superapi.patch(f"/ldap-domains/{name}", json={"timeout": 8}, headers={"If-Match": tag}), 412)
    assert node.app.directories.show(name)["timeout"] == 7

    # write-back (guide §7.5): settings by PUT, the run as a job whose result is the report
    wb = {"bind_dn": slapd.service_dn, "bind_password": slapd.service_password}
    assert "separate account" in assert_problem(superapi.request("PUT", f"/ldap-domains/{name}/writeback",
                                                                 json=wb), 422)["detail"]
    wb = {"bind_dn": slapd.root_dn, "bind_password": slapd.root_password}
    assert superapi.request("PUT", f"/ldap-domains/{name}/writeback", json=wb).get_json() == {
        "name": name, "enabled": True, "pattern": "{login}", "mail_domain": domain, "bind_dn": slapd.root_dn}
    node.app.aliases.add(f"api.{login}@{domain}", [f"{login}@{domain}"])
    job = wait_job(superapi, superapi.post(f"/ldap-domains/{name}/writeback", json={"dry_run": True}).get_json()["id"])
    assert job["status"] == "done" and [p["add"] for p in job["result"]["planned"] if "changes" in p] == [
        [f"proxyAddresses: smtp:api.{login}@{domain}"]], job
    assert superapi.request("PUT", f"/ldap-domains/{name}/writeback", json={"enabled": False}).status_code == 200
    assert node.app.directories.show(name)["writeback"] == {}
    node.app.aliases.remove(f"api.{login}@{domain}")

    scoped = api(make_token(node, "domain_admin", [domain])[1])
    assert_problem(scoped.get("/ldap-domains"), 403)
    readonly = api(make_token(node, "readonly")[1])
    assert readonly.get(f"/ldap-domains/{name}").status_code == 200
    assert_problem(readonly.post(f"/ldap-domains/{name}/sync", json={}), 403)
    assert_problem(readonly.post(f"/ldap-domains/{name}/writeback", json={"dry_run": True}), 403)
    assert_problem(superapi.delete(f"/ldap-domains/{name}"), 409)  # materialised accounts: force needed
    removed = superapi.delete(f"/ldap-domains/{name}?force=true").get_json()
    assert removed == {"name": name, "disabled_mailboxes": 1}
    assert_problem(superapi.get(f"/ldap-domains/{name}"), 404)
    assert_problem(superapi.post(f"/ldap-domains/{name}/sync", json={}), 404)


def test_checks_sizing_and_backups(node, superapi, api, domain):
    assert_problem(superapi.post("/checks", json={"checks": ["no-such-check"]}), 422)
    job = wait_job(superapi, superapi.post("/checks", json={"checks": ["disk"], "record": False}).get_json()["id"])
    assert job["status"] == "done", job
    assert job["result"]["results"] and {r["check"] for r in job["result"]["results"]} == {"disk"}
    assert job["result"]["status"] in ("ok", "warning", "critical")
    assert isinstance(superapi.get("/checks").get_json()["states"], dict)
    sizing = superapi.get("/sizing?mailboxes=1000&sessions_per_user=1.5").get_json()
    r = cli(node, "sizing", "--mailboxes", "1000", "--sessions-per-user", "1.5", "--json")
    assert r.exit_code == 0, r.output
    assert sizing["parameters"] == json.loads(r.stdout)["parameters"]
    assert_problem(superapi.get("/sizing?mailboxes=0"), 422)

    before = superapi.get("/backups?per_page=500").get_json()["total"]
    job = wait_job(superapi, superapi.post("/backups", json={}).get_json()["id"])
    assert job["status"] == "done", job
    listed = superapi.get("/backups?per_page=500").get_json()
    assert listed["total"] == before + 1
    newest = listed["items"][0]
    assert newest["path"] == job["result"]["path"] and newest["complete"] and newest["size"] > 0
    assert node.app.backups.verify(Path(newest["path"]))["node"] == node.app.config.node_name

    scoped = api(make_token(node, "domain_admin", [domain])[1])
    for response in (scoped.get("/checks"), scoped.get("/backups"), scoped.get("/sizing?mailboxes=10")):
        assert_problem(response, 403)
    readonly = api(make_token(node, "readonly")[1])
    assert_problem(readonly.post("/backups", json={}), 403)
    assert_problem(readonly.post("/checks", json={}), 403)


def _custom(name: str) -> str:
    return CUSTOM.replace("name: corp", f"name: {name}")


def test_templates_validated_imported_activated_and_parameters_set(node, superapi, api):
    name = f"api{uuid.uuid4().hex[:6]}"
    checked = superapi.post("/templates/validate", json={"text": _custom(name)}).get_json()
    assert checked["name"] == name and checked["raw_snippets"] == ["components.postfix.extra.main"]
    assert not any(t["name"] == name for t in node.app.templates.list())  # validating stores nothing
    assert_problem(superapi.post("/templates/validate", json={"text": "metadata: ["}), 422)
    readonly = api(make_token(node, "readonly")[1])
    assert_problem(readonly.post("/templates", json={"text": _custom(name)}), 403)

    made = superapi.post("/templates", json={"text": _custom(name)})
    assert made.status_code == 201 and made.get_json()["version"] == "1.0.0"
    assert audit_rows(node, "template.import", f"{name}@1.0.0")[-1].source == "api"
    assert_problem(superapi.post("/templates", json={"text": _custom(name)}), 409)  # versions are immutable
    previous = next(t for t in node.app.templates.list() if t["active"])
    try:
        done = superapi.post(f"/templates/{name}/activate").get_json()
        assert done == {"name": name, "version": "1.0.0", "active": True}
        assert_problem(superapi.delete(f"/templates/{name}"), 409)  # the active one stays
    finally:
        node.app.templates.activate(previous["name"], previous["version"])
    assert superapi.delete(f"/templates/{name}?version=1.0.0").status_code == 204
    assert_problem(superapi.get(f"/templates/{name}"), 404)

    params = {p["name"]: p for p in superapi.get("/template-parameters?per_page=500").get_json()["items"]}
    assert_problem(superapi.patch("/template-parameters", json={"values": {"no_such_parameter": 1}}), 422)
    some = next(p for p in params.values() if p["type"] == "integer" and not p["set"])
    try:
        done = superapi.patch("/template-parameters", json={"values": {some["name"]: some["value"]}}).get_json()
        assert done["values"][some["name"]] == some["value"]
        listed = json.loads(cli(node, "template", "parameters", "--json").stdout)
        assert {p["name"]: p for p in listed}[some["name"]]["set"] is True
    finally:
        node.app.templates.set_parameters({}, [some["name"]])


def test_certificate_uploaded_activated_and_removed(node, superapi, api):
    host = node.app.settings.mail_host()
    cert_pem, key_pem, _ = tls.self_signed(host, [host])
    name = f"api{uuid.uuid4().hex[:6]}"
    bad = superapi.post("/certificates", json={"name": name, "type": "mail", "certificate": cert_pem,
                                               "key": tls.self_signed(host, [host])[1]})
    assert "does not match" in assert_problem(bad, 422)["detail"]
    made = superapi.post("/certificates", json={"name": name, "type": "mail", "certificate": cert_pem,
                                                "key": key_pem})
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["names"] == [host] and "key" not in made.get_json()
    shown = superapi.get(f"/certificates/{name}").get_json()
    assert shown["active"] is False and host not in shown["missing_names"] and shown["sha256"]
    readonly = api(make_token(node, "readonly")[1])
    assert_problem(readonly.post(f"/certificates/{name}/activate"), 403)
    builtin = next(c for c in node.app.certificates.list() if c["type"] == "mail" and c["active"])
    try:
        assert superapi.post(f"/certificates/{name}/activate").get_json()["type"] == "mail"
        assert_problem(superapi.delete(f"/certificates/{name}"), 409)  # the active one stays
    finally:
        node.app.certificates.activate(builtin["name"])
    assert superapi.delete(f"/certificates/{name}").status_code == 204
    assert audit_rows(node, "cert.add", name)[-1].source == "api"


def test_dkim_generated_and_rotated_within_the_token_domains(node, api, domain):
    other = f"o{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(other)
    scoped = api(make_token(node, "domain_admin", [domain])[1])
    made = scoped.post(f"/domains/{domain}/dkim", json={"bits": 1024})
    assert made.status_code == 201 and made.get_json()["bits"] == 1024
    assert_problem(scoped.post(f"/domains/{domain}/dkim", json={}), 409)  # a key already: rotate it
    rotated = scoped.post(f"/domains/{domain}/dkim/rotate", json={}).get_json()
    assert rotated["selector"] != made.get_json()["selector"] and rotated["bits"] == 1024
    assert [p["selector"] for p in rotated["previous"]] == [made.get_json()["selector"]]
    r = cli(node, "domains", "dkim", "show", domain, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["selector"] == rotated["selector"]
    assert scoped.get(f"/domains/{domain}/dns").status_code == 200
    for response in (scoped.post(f"/domains/{other}/dkim", json={}), scoped.get(f"/domains/{other}/dkim"),
                     scoped.post(f"/domains/{other}/dkim/rotate", json={}), scoped.get(f"/domains/{other}/dns")):
        assert_problem(response, 403)
    assert node.app.dkim.active_key(other) is None


def test_domain_admin_imports_into_its_own_domains_only(node, api, domain):
    other = f"o{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(other)
    scoped = api(make_token(node, "domain_admin", [domain])[1])
    rows = f"address,password\nin@{domain},Import-pw-123456\nout@{other},Import-pw-123456\n"
    job = wait_job(scoped, scoped.post("/mailboxes/import", json={"csv": rows}).get_json()["id"])
    assert job["status"] == "failed" and f"not {other}" in job["error"]
    assert node.app.mailboxes.list(domain) == [] and node.app.mailboxes.list(other) == []
    job = wait_job(scoped, scoped.post("/mailboxes/import", json={"csv": rows.rsplit("out@", 1)[0]}).get_json()["id"])
    assert job["status"] == "done" and job["result"]["imported"] == 1


@pytest.fixture
def receiver():
    """A loopback HTTP server that records the bodies POSTed to it (a push endpoint)."""
    received: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/events", received
    server.shutdown()
    server.server_close()


def test_impersonation_and_push_endpoints(node, superapi, api, domain, receiver):
    url, received = receiver
    name, push = f"imp{uuid.uuid4().hex[:6]}", f"push{uuid.uuid4().hex[:6]}"
    readonly = api(make_token(node, "readonly")[1])
    assert_problem(readonly.post("/impersonation", json={"name": name, "password": "Imp-pw-123456",
                                                         "domains": [domain]}), 403)
    try:
        made = superapi.post("/impersonation", json={"name": name, "password": "Imp-pw-123456",
                                                     "domains": [domain], "description": "archiver"})
        assert made.status_code == 201 and made.get_json()["domains"] == [domain]
        assert "password" not in made.get_json()
        changed = superapi.patch(f"/impersonation/{name}", json={"enabled": False}).get_json()
        assert changed["enabled"] is False and superapi.get(f"/impersonation/{name}").get_json()["uses"] == 0
        listed = json.loads(cli(node, "impersonation", "list", "--json").stdout)
        assert {i["name"]: i for i in listed}[name]["enabled"] is False
        assert_problem(superapi.post("/impersonation", json={"name": "x" + name, "password": "Imp-pw-123456",
                                                             "domains": ["nx-" + domain]}), 404)
        assert isinstance(superapi.get("/impersonation/uses").get_json()["items"], list)

        made = superapi.post("/push-endpoints", json={"name": push, "url": url, "secret": "s3cret"})
        assert made.status_code == 201 and made.get_json()["secret"] == "set"
        assert superapi.post(f"/push-endpoints/{push}/test").get_json()["status"] == 204
        assert json.loads(received[-1])["event"] == "Test"
        assert push in {p["name"] for p in superapi.get("/push-endpoints").get_json()["items"]}
        assert_problem(superapi.post("/push-endpoints", json={"name": "y" + push, "url": "ftp://x"}), 422)
    finally:
        for path in (f"/impersonation/{name}", f"/push-endpoints/{push}"):
            superapi.delete(path)
    assert_problem(superapi.get(f"/impersonation/{name}"), 404)
    assert push not in {p["name"] for p in node.app.push.endpoints()}
    scoped = api(make_token(node, "domain_admin", [domain])[1])
    for path in ("/impersonation", "/push-endpoints", "/push-endpoints/failures"):
        assert_problem(scoped.get(path), 403)


def test_resources_nodes_and_queue_flush(node, superapi, api, domain, mailbox):
    owner, _ = mailbox("owner")
    scoped = api(make_token(node, "domain_admin", [domain])[1])
    made = scoped.post("/resources", json={"address": f"room1@{domain}", "display_name": "Room 1",
                                           "multiple_bookings": 2, "owner": owner})
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["kind"] == "room" and made.get_json()["calendar"]
    shown = scoped.get(f"/resources/room1@{domain}")
    changed = scoped.patch(f"/resources/room1@{domain}", json={"multiple_bookings": 0},
                           headers={"If-Match": shown.headers["ETag"]})
    assert changed.status_code == 200 and changed.get_json()["multiple_bookings"] == 0
    assert_problem(scoped.patch(f"/resources/room1@{domain}", json={"display_name": "x"},
                                headers={"If-Match": shown.headers["ETag"]}), 412)
    listed = json.loads(cli(node, "resources", "list", "--domain", domain, "--json").stdout)
    assert [(r["address"], r["multiple_bookings"]) for r in listed] == [(f"room1@{domain}", 0)]
    assert_problem(scoped.post("/resources", json={"address": "room@example.org"}), 403)
    assert scoped.delete(f"/resources/room1@{domain}").status_code == 204
    assert node.app.resources.list(domain) == []

    # drained and removed: nodes of their own (the session's node serves the other tests)
    alive, gone = f"n{uuid.uuid4().hex[:6]}", f"n{uuid.uuid4().hex[:6]}"
    with node.app.dbs.session("main") as s:
        s.add(Node(name=alive, fqdn=f"{alive}.rupost.test", address="127.0.0.7", state="in_service",
                   last_heartbeat=utcnow()))
        s.add(Node(name=gone, fqdn=f"{gone}.rupost.test", address="127.0.0.8", state="in_service",
                   last_heartbeat=utcnow() - dt.timedelta(hours=1)))
    assert_problem(scoped.patch(f"/nodes/{alive}", json={"drained": True}), 403)
    assert superapi.patch(f"/nodes/{alive}", json={"drained": True}).get_json()["admin_state"] == "drained"
    assert node.app.nodes.show(alive)["admin_state"] == "drained"
    assert superapi.patch(f"/nodes/{alive}", json={"drained": False}).get_json()["admin_state"] == "enabled"
    assert "stop its core first" in assert_problem(superapi.delete(f"/nodes/{alive}"), 409)["detail"]
    assert superapi.delete(f"/nodes/{gone}").status_code == 204
    assert superapi.delete(f"/nodes/{alive}?force=true").status_code == 204
    assert {n["name"] for n in node.app.nodes.list()}.isdisjoint({alive, gone})
    assert audit_rows(node, "node.remove", gone)[-1].source == "api"
    me = node.app.config.node_name

    flushed = superapi.post("/queues/flush", json={})
    assert flushed.status_code == 200 and flushed.get_json() == {"node": me, "action": "flush", "ids": "all"}
    assert audit_rows(node, "mailqueue.flush", "all")[-1].source == "api"
    assert_problem(superapi.post("/queues/actions", json={"action": "hold"}), 422)  # neither ids nor match
    held = superapi.post("/queues/actions", json={"action": "hold", "match": ["sender=nobody-here@nowhere.test"]})
    assert held.status_code == 200 and held.get_json()["matched"] == 0


def test_reports_and_node_wide_reads(node, superapi, api, domain):
    events = superapi.get("/monitor-events?problems_only=false&per_page=5").get_json()
    assert events["per_page"] == 5 and isinstance(events["items"], list)
    peaks = superapi.get("/session-peaks?hours=3").get_json()
    assert len(peaks["hours"]) == 3 and set(peaks["peaks"]) == set(peaks["series"])
    traffic = superapi.get("/statistics/domains?hours=24").get_json()
    assert isinstance(traffic["items"], list)
    before = superapi.get("/statistics/retention").get_json()["days"]
    try:
        assert superapi.request("PUT", "/statistics/retention", json={"days": 40}).get_json() == {"days": 40}
        r = cli(node, "stats", "retention")
        assert r.exit_code == 0 and "kept for 40 days" in r.stdout, r.output
        assert_problem(superapi.request("PUT", "/statistics/retention", json={"days": 0}), 422)
    finally:
        node.app.stats.set_retention(before)
    host = node.app.settings.mail_host()
    assert superapi.get("/settings/mail-host").get_json()["mail_host"] == host
    assert superapi.get("/srs").get_json()["secrets"] >= 1
    expiring = superapi.get("/certificates/expiring").get_json()
    assert all(c["level"] in ("warning", "critical", "expired") for c in expiring["items"])
    assert_problem(superapi.post("/certificates/not-builtin/regenerate"), 422)
    active = next(t for t in node.app.templates.list() if t["active"])
    same = superapi.get(f"/templates/diff?a={active['name']}&b={active['name']}@{active['version']}").get_json()
    assert same == {"diff": ""}
    assert_problem(superapi.get("/templates/diff?a=nope&b=nope"), 404)
    assert_problem(superapi.post("/ldap-filters/test", json={"ldap_domain": "nope", "filter": "(uid=*)"}), 404)
    assert_problem(superapi.post("/ldap-filters/test", json={}), 422)
    assert isinstance(superapi.get("/deploys/drift").get_json()["items"], list)
    plan = wait_job(superapi, superapi.post("/deploys/plan").get_json()["id"])
    assert plan["status"] == "done" and len(plan["result"]["digest"]) == 64, plan
    assert plan["result"]["template"] == active["name"] and isinstance(plan["result"]["changed"], list)
    scoped = api(make_token(node, "domain_admin", [domain])[1])
    node.app.mailboxes.add(f"q1@{domain}", "Quota-pw-123456", "1G")
    own = scoped.get("/quota").get_json()
    assert own["mailboxes"] == 1 and own["quota_total_bytes"] == 1 << 30
    assert scoped.get("/quota?domain=example.org").get_json()["mailboxes"] == 0  # not its domain: nothing
    assert superapi.get("/quota").get_json()["mailboxes"] >= 1
    for path in ("/monitor-events", "/session-peaks", "/statistics/domains", "/srs", "/settings/mail-host",
                 "/certificates/expiring", "/deploys/drift"):
        assert_problem(scoped.get(path), 403)
    assert_problem(api(make_token(node, "readonly")[1]).request("PUT", "/statistics/retention", json={"days": 9}), 403)


def test_imap_migration_as_a_job(node, superapi, api, domain, mailbox):
    target, _ = mailbox("migrated")
    source = "imaps://127.0.0.1:1"  # nothing listens there: the mailbox fails with the reason, on loopback
    bad = superapi.post("/migrations", json={"source": source, "map": "only-two,fields\n"})
    job = wait_job(superapi, bad.get_json()["id"])
    assert job["status"] == "failed" and "line 1" in job["error"]
    assert_problem(api(make_token(node, "readonly")[1]).post("/migrations", json={"source": source, "map": "x"}), 403)
    rows = f"source_login,source_password,target_address\nold-user,Old-pw-1,{target}\nother,Old-pw-2,nx@{domain}\n"
    started = superapi.post("/migrations", json={"source": source, "map": rows, "insecure": True, "workers": 1})
    job = wait_job(superapi, started.get_json()["id"])
    assert job["status"] == "done", job
    assert job["result"]["mailboxes"] == 2 and job["result"]["failed"] == 2
    assert "Old-pw" not in json.dumps(job)  # the sources' passwords stay out of the job
    states = {r["target"]: r for r in superapi.get(f"/migrations?source={source}").get_json()["items"]}
    assert states[target]["status"] == "failed" and states[target]["error"]
    listed = json.loads(cli(node, "migrate", "status", "--source", source, "--json").stdout)
    assert {r["target"]: r["status"] for r in listed} == {t: r["status"] for t, r in states.items()}
    assert audit_rows(node, "migrate.imap", source)[-1].source == "api"
    assert_problem(api(make_token(node, "domain_admin", [domain])[1]).get("/migrations"), 403)
