"""The API's maintenance resources (rupost/api/maintenance.py and the additions to the lists
and the mail host): DH parameters, lockouts, an administrator's account, the database state,
evacuation and list updates as jobs, sizing apply, SRS rotation, the DNS check against a
local name server, a domain's certificate note; each with its roles, domain scope, audit
rows and the same state as the CLI. Then the two refusals of the node's own removal and of
a booking owner outside a domain administrator's domains, in every face."""
from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import delete

from rupost.db.models import Setting, utcnow
from rupost.db.panel_models import PanelLockout
from rupost.errors import ConflictError, NotFoundError
from rupost.services import Actor
from rupost.services.settings import MAIL_HOST
from rupost.services.srs import SRS_PENDING
from rupost.tls import FFDHE3072_PEM
from support.dns_zone import Zone

from .api_support import make_token
from .conftest import audit_rows, text
from .test_api import assert_problem, cli, wait_job


def test_dh_parameters_admins_lockouts_and_database(node, superapi, api, domain, admin_factory):
    scoped, reader = api(make_token(node, "domain_admin", [domain])[1]), api(make_token(node, "readonly")[1])
    listed = superapi.get("/dhparams").get_json()["items"]
    assert any(d["builtin"] for d in listed)
    builtin = next(d["name"] for d in listed if d["builtin"])
    name = f"api-{uuid.uuid4().hex[:6]}"
    bad = superapi.post("/dhparams", json={"name": name, "pem": "-----BEGIN DH PARAMETERS-----\nAAAA\n"})
    assert "cannot be parsed" in assert_problem(bad, 422)["detail"]
    assert_problem(reader.post("/dhparams", json={"name": name, "pem": FFDHE3072_PEM}), 403)
    assert_problem(scoped.get("/dhparams"), 403)
    made = superapi.post("/dhparams", json={"name": name, "pem": FFDHE3072_PEM})
    assert made.status_code == 201 and made.get_json() == {"name": name, "bits": 3072, "active": True}
    assert audit_rows(node, "dhparam.import", name)[-1].source == "api"
    assert [d["name"] for d in json.loads(cli(node, "dhparam", "list", "--json").stdout) if d["active"]] == [name]
    assert "is active" in assert_problem(superapi.delete(f"/dhparams/{name}"), 409)["detail"]
    assert superapi.post(f"/dhparams/{builtin}/activate").get_json()["active"] is True
    assert superapi.delete(f"/dhparams/{name}").status_code == 204
    assert_problem(superapi.post(f"/dhparams/{name}/activate"), 404)

    login = admin_factory("domain_admin", [domain])
    shown = superapi.get(f"/admins/{login}").get_json()
    assert (shown["role"], shown["domains"], shown["enabled"]) == ("domain_admin", [domain], True)
    assert "password" not in json.dumps(shown) and "totp_secret" not in shown
    assert_problem(superapi.get(f"/admins/nx-{login}"), 404)
    assert_problem(reader.get(f"/admins/{login}"), 403)

    key = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    with node.app.dbs.session("main") as s:
        s.merge(PanelLockout(kind="address", key=key, failures=99, locked_until=utcnow() + dt.timedelta(hours=1)))
    assert key in {i["key"] for i in superapi.get("/security/lockouts?per_page=500").get_json()["items"]}
    assert_problem(scoped.get("/security/lockouts"), 403)
    assert_problem(superapi.delete(f"/security/lockouts/host/{key}"), 422)
    assert_problem(reader.delete(f"/security/lockouts/address/{key}"), 403)
    assert superapi.delete(f"/security/lockouts/address/{key}").status_code == 204
    assert key not in {i["key"] for i in node.app.admins.lockouts()}
    assert audit_rows(node, "admin.unlock", f"address:{key}")[-1].source == "api"

    database = superapi.get("/database").get_json()
    db = node.app.config.database
    assert database["ha"] is False and database["members"] == []
    assert database["reaches"]["core"] == f"{db.host}:{db.port}"
    assert_problem(scoped.get("/database"), 403)


def test_mail_host_sizing_srs_and_jobs(node, superapi, api, domain, settings_kept):
    scoped, reader = api(make_token(node, "domain_admin", [domain])[1]), api(make_token(node, "readonly")[1])
    host = node.app.settings.mail_host()
    refused = superapi.request("PUT", "/settings/mail-host", json={"mail_host": "bad..name"})
    assert "bad..name" in assert_problem(refused, 422)["detail"] and node.app.settings.mail_host() == host
    assert_problem(reader.request("PUT", "/settings/mail-host", json={"mail_host": f"mx.{domain}"}), 403)
    changed = superapi.request("PUT", "/settings/mail-host", json={"mail_host": f"mx.{domain}"}).get_json()
    assert changed["changed"] is True and changed["mail_host"] == f"mx.{domain}"
    assert any("rupost deploy" in note for note in changed["notes"])
    assert json.loads(cli(node, "settings", "mail-host", "--json").stdout)["mail_host"] == f"mx.{domain}"
    assert audit_rows(node, "settings.set", MAIL_HOST)[-1].source == "api"

    applied = superapi.post("/sizing/apply", json={"mailboxes": 200})
    estimate = node.app.sizing.estimate(200)
    if applied.status_code == 200:  # the active template declares the load parameters
        params = applied.get_json()["parameters"]
        assert all(params[k] == v for k, v in estimate["parameters"].items())
        assert audit_rows(node, "template.parameters")[-1].source == "api"
    else:
        assert "declares no" in assert_problem(applied, 422)["detail"]
    assert_problem(superapi.post("/sizing/apply", json={"mailboxes": 0}), 422)
    assert_problem(scoped.post("/sizing/apply", json={"mailboxes": 200}), 403)

    with node.app.dbs.session("main") as s:
        s.execute(delete(Setting).where(Setting.key == SRS_PENDING))
    rotated = superapi.post("/srs/rotate").get_json()
    assert rotated["pending_signs_from"] is not None
    assert "already under way" in assert_problem(superapi.post("/srs/rotate"), 409)["detail"]
    assert audit_rows(node, "srs.rotate", SRS_PENDING)[-1].source == "api"
    assert_problem(reader.post("/srs/rotate"), 403)

    job = wait_job(superapi, superapi.post("/evacuations", json={"node": "nx-node"}).get_json()["id"])
    assert job["status"] == "done" and job["result"]["reports"] == [], job
    assert_problem(superapi.post("/evacuations", json={"timeout": 0}), 422)
    assert_problem(scoped.post("/evacuations", json={}), 403)

    address = f"team-{uuid.uuid4().hex[:6]}@{domain}"
    node.app.distribution_lists.add(address, members=[])
    tag = superapi.get(f"/distribution-lists/{address}").headers["ETag"]
    node.app.distribution_lists.set(address, enabled=False)  # another administrator changed it
    assert_problem(superapi.post(f"/distribution-lists/{address}/update", headers={"If-Match": tag}), 412)
    tag = superapi.get(f"/distribution-lists/{address}").headers["ETag"]
    started = superapi.post(f"/distribution-lists/{address}/update", headers={"If-Match": tag})
    assert started.status_code == 202, started.get_json()
    assert wait_job(superapi, started.get_json()["id"])["result"]["lists"] == []  # a static list: nothing asked
    assert wait_job(superapi, superapi.post("/distribution-lists/update").get_json()["id"])["status"] == "done"
    assert_problem(scoped.post(f"/distribution-lists/{address}/update"), 403)
    assert_problem(superapi.post(f"/distribution-lists/nx-{address}/update"), 404)


def test_dns_check_and_certificate_note(node, superapi, api, domain):
    other = f"o{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(other)
    try:
        scoped = api(make_token(node, "domain_admin", [domain])[1])
        expected = node.app.dns_records.records(domain)
        zone = Zone()
        try:
            zone.load([r.zone_line() for r in expected["records"] if r.type == "MX"])
            checked = scoped.get(f"/domains/{domain}/dns/check?nameserver=127.0.0.1:{zone.port}&timeout=3")
            assert checked.status_code == 200, checked.get_json()
            status = {(r["type"], r["name"]): r["status"] for r in checked.get_json()["records"]}
            assert status[("MX", f"{domain}.")] == "present" and status[("TXT", f"_dmarc.{domain}.")] == "missing"
            assert checked.get_json()["ok"] is False
            assert_problem(scoped.get(f"/domains/{other}/dns/check?nameserver=127.0.0.1:{zone.port}"), 403)
            assert_problem(scoped.get(f"/domains/{domain}/dns/check?nameserver=ns.example.org"), 422)
        finally:
            zone.close()
        note = scoped.get(f"/domains/{domain}/certificate-note").get_json()["note"]
        assert note == node.app.certificates.domain_note(domain)
        assert_problem(scoped.get(f"/domains/{other}/certificate-note"), 403)
        assert_problem(superapi.get(f"/domains/nx{other}/certificate-note"), 404)
    finally:
        node.app.domains.remove(other)


def test_the_node_the_service_runs_on_is_not_removed(node, superapi, superadmin):
    me = node.app.config.node_name
    with pytest.raises(ConflictError, match=f"node {me} is the node this RuPost runs on"):
        node.app.nodes.remove(me, force=True)
    assert f"node {me} is the node this RuPost runs on" in assert_problem(
        superapi.delete(f"/nodes/{me}?force=true"), 409)["detail"]
    superadmin.post("/language", {"lang": "en"})
    page = text(superadmin.post(f"/nodes/{me}/remove", follow_redirects=True))
    assert f"node {me} is the node this RuPost runs on" in page
    assert "it cannot remove itself" in cli(node, "nodes", "remove", me, "--force").output
    assert node.app.nodes.show(me)["name"] == me


def test_a_booking_owner_outside_the_domain_admins_domains_is_refused_alike(node, api, domain, make_client,
                                                                             admin_factory):
    other = f"o{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(other)
    node.app.mailboxes.add(f"boss@{other}", "Owner-pw-1234567")
    try:
        scoped_app = node.app.as_actor(Actor("scoped-test", "cli", domains=frozenset({domain})))
        messages = []
        for owner in (f"boss@{other}", f"ghost@{other}"):  # exists, does not exist: the same answer
            with pytest.raises(NotFoundError) as refused:
                scoped_app.resources.add(f"room-{uuid.uuid4().hex[:4]}@{domain}", owner=owner)
            messages.append(str(refused.value).replace(owner, "OWNER"))
        assert messages[0] == messages[1] and "is not a mailbox" in messages[0]
        assert node.app.resources.list(domain) == []

        scoped = api(make_token(node, "domain_admin", [domain])[1])
        room = f"room-{uuid.uuid4().hex[:4]}@{domain}"
        assert scoped.post("/resources", json={"address": room}).status_code == 201
        answers = [assert_problem(scoped.patch(f"/resources/{room}", json={"owner": owner}), 404)["detail"]
                   .replace(owner, "OWNER") for owner in (f"boss@{other}", f"ghost@{other}")]
        assert answers[0] == answers[1]
        created = [assert_problem(scoped.post("/resources", json={"address": f"r2@{domain}", "owner": owner}),
                                  404)["detail"].replace(owner, "OWNER") for owner in (f"boss@{other}",
                                                                                       f"ghost@{other}")]
        assert created[0] == created[1] == answers[0]
        assert node.app.resources.show(room)["owner"] == ""
        panel = make_client()
        panel.login(admin_factory("domain_admin", [domain]))
        panel.post("/language", {"lang": "en"})
        pages = [text(panel.post(f"/resources/{room}/set", {"owner": owner, "multiple_bookings": "1"},
                                 follow_redirects=True)) for owner in (f"boss@{other}", f"ghost@{other}")]
        assert "is not a mailbox of the domains you administer" in pages[0]
        assert "is not a mailbox of the domains you administer" in pages[1]
        assert node.app.resources.show(room)["owner"] == ""
        node.app.resources.set(room, owner=f"boss@{other}")  # a superadministrator may name it
        assert node.app.resources.show(room)["owner"] == f"boss@{other}"
        node.app.resources.remove(room)
    finally:
        node.app.mailboxes.remove(f"boss@{other}")
        node.app.domains.remove(other)
