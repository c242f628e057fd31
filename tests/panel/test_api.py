"""The REST API (/api/v1) through the panel's application: tokens and roles, problem details,
ETags, idempotent creates, jobs, and the same state as the CLI's."""
from __future__ import annotations

import json
import time
import uuid

from click.testing import CliRunner
from sqlalchemy import update

from rupost.cli import main as rupost
from rupost.db.api_models import ApiToken
from rupost.db.models import utcnow

from .api_support import ApiClient, make_token
from .conftest import audit_rows

PROBLEM = "application/problem+json"


def cli(node, *args, input=None):
    return CliRunner().invoke(rupost, ["--root", str(node.root), *args], input=input)


def assert_problem(response, status):
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = response.get_json(force=True)
    assert body["status"] == status and body["type"].startswith("urn:rupost:problem:") and body["detail"]
    return body


def test_token_from_the_cli_works_until_revoked(node, api, domain):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    r = cli(node, "api-tokens", "add", name, "--role", "domain_admin", "--domain", domain, "--expires", "2999-12-31")
    assert r.exit_code == 0, r.output
    secret = r.stdout.strip().splitlines()[-1]
    assert secret.startswith("rpt_")
    listed = {t["name"]: t for t in json.loads(cli(node, "api-tokens", "list", "--json").stdout)}
    assert listed[name]["state"] == "active" and listed[name]["domains"] == [domain]
    assert secret not in json.dumps(listed)  # shown once, stored hashed
    client = api(secret)
    assert client.get(f"/domains/{domain}").status_code == 200
    assert cli(node, "api-tokens", "revoke", name).exit_code == 0
    body = assert_problem(client.get(f"/domains/{domain}"), 401)
    assert "revoked" in body["detail"]
    assert json.loads(cli(node, "api-tokens", "list", "--json").stdout)[0]["name"]
    r = cli(node, "api-tokens", "add", "bad name!", "--role", "readonly")
    assert r.exit_code == 1 and "invalid token name" in r.output


def test_missing_wrong_and_expired_tokens_get_401(node, api):
    assert_problem(api(None).get("/domains"), 401)
    assert api(None).get("/domains").headers["WWW-Authenticate"].startswith("Bearer")
    assert_problem(api("rpt_" + "x" * 43).get("/domains"), 401)
    name, secret = make_token(node, "readonly", expires="2999-01-01")
    client = api(secret)
    assert client.get("/domains").status_code == 200
    with node.app.dbs.session("main") as s:
        s.execute(update(ApiToken).where(ApiToken.name == name).values(expires_at=utcnow()))
    assert "expired" in assert_problem(client.get("/domains"), 401)["detail"]
    failed = [r for r in audit_rows(node, "api.auth.failed") if r.actor == f"token:{name}"]
    assert failed and failed[-1].details["reason"] == "expired token"


def test_wrong_tokens_lock_the_address_out(node, api):
    client = api("rpt_" + "y" * 43)
    limit = node.app.admins.setting("panel.lockout_address_failures")
    statuses = [client.get("/domains").status_code for _ in range(limit + 1)]
    assert statuses[:limit] == [401] * limit and statuses[-1] == 429
    good = ApiClient(client.http.application, make_token(node)[1])
    good.http.environ_base["REMOTE_ADDR"] = client.address
    assert_problem(good.get("/domains"), 429)  # even a right token, from that address, until it expires
    node.app.admins.unlock("address", client.address)
    assert good.get("/domains").status_code == 200


def test_errors_are_problem_details(superapi, domain):
    assert_problem(superapi.get("/no-such-thing"), 404)
    assert_problem(superapi.get("/domains/nx-" + domain), 404)
    assert_problem(superapi.request("PUT", "/domains"), 405)
    assert_problem(superapi.post("/domains", data="name=x", content_type="application/x-www-form-urlencoded"), 415)
    body = assert_problem(superapi.post("/domains", json={"name": 5}), 422)
    assert "name" in body["errors"]["json"]
    assert_problem(superapi.post("/domains", json={"name": domain}), 409)
    assert_problem(superapi.post("/mailboxes", json={"address": f"a@{domain}", "password": "short"}), 422)


def test_readonly_token_changes_nothing(node, api, mailbox, domain):
    address, _ = mailbox("ro")
    client = api(make_token(node, "readonly")[1])
    assert client.get(f"/mailboxes/{address}").status_code == 200
    before = node.app.mailboxes.show(address)
    for response in (client.post("/mailboxes", json={"address": f"new@{domain}", "password": "Readonly-pw-123"}),
                     client.patch(f"/mailboxes/{address}", json={"enabled": False}),
                     client.delete(f"/mailboxes/{address}"),
                     client.post("/domains", json={"name": f"ro-{domain}"}),
                     client.delete(f"/domains/{domain}")):
        assert_problem(response, 403)
    assert node.app.mailboxes.show(address) == before
    assert client.get("/audit").status_code == 200


def test_domain_admin_token_stays_in_its_domains(node, api, domain):
    other = f"o{uuid.uuid4().hex[:8]}.test"
    node.app.domains.add(other)
    node.app.mailboxes.add(f"x@{other}", "Other-pw-123456")
    client = api(make_token(node, "domain_admin", [domain])[1])
    assert [d["name"] for d in client.get("/domains?per_page=500").get_json()["items"]] == [domain]
    listed = client.get(f"/mailboxes?domain={other}&per_page=500").get_json()["items"]
    assert listed == []
    assert_problem(client.get(f"/mailboxes/x@{other}"), 403)
    assert_problem(client.patch(f"/mailboxes/x@{other}", json={"enabled": False}), 403)
    assert_problem(client.post("/mailboxes", json={"address": f"y@{other}", "password": "Other-pw-123456"}), 403)
    assert_problem(client.get("/audit"), 403)
    assert client.post("/mailboxes", json={"address": f"y@{domain}", "password": "Own-pw-12345678"}).status_code == 201
    assert node.app.mailboxes.show(f"x@{other}")["enabled"] is True


def test_actions_are_audited_with_token_and_address(node, api, domain):
    name, secret = make_token(node, "domain_admin", [domain])
    client = api(secret)
    address = f"audited@{domain}"
    assert client.post("/mailboxes", json={"address": address, "password": "Audited-pw-1234"}).status_code == 201
    row = audit_rows(node, "mailbox.add", address)[-1]
    assert row.actor == f"token:{name}" and row.source == "api"
    assert row.details["token"] == name and row.details["address"] == client.address
    page = api(make_token(node)[1]).get(f"/audit?actor=token:{name}&action=mailbox.").get_json()
    assert [r["target"] for r in page["items"]] == [address]


def test_stale_etag_gets_412(superapi, mailbox):
    address, _ = mailbox("etag")
    first = superapi.get(f"/mailboxes/{address}")
    tag = first.headers["ETag"]
    changed = superapi.patch(f"/mailboxes/{address}", json={"quota": "1G"}, headers={"If-Match": tag})
    assert changed.status_code == 200 and changed.headers["ETag"] != tag
    stale = superapi.patch(f"/mailboxes/{address}", json={"enabled": False}, headers={"If-Match": tag})
    assert_problem(stale, 412)
    assert superapi.get(f"/mailboxes/{address}").get_json() == {**first.get_json(), "quota_bytes": 1 << 30}


def test_idempotent_create_answers_the_same(node, superapi, domain):
    body = {"address": f"idem@{domain}", "password": "Idem-pw-1234567"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = superapi.post("/mailboxes", json=body, headers=key)
    again = superapi.post("/mailboxes", json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    assert len(audit_rows(node, "mailbox.add", body["address"])) == 1
    assert_problem(superapi.post("/mailboxes", json={**body, "address": f"idem2@{domain}"}, headers=key), 422)
    assert_problem(superapi.post("/mailboxes", json=body), 409)  # without the key: a second create


def test_api_and_cli_see_the_same_state(node, superapi, domain):
    created = superapi.post("/aliases", json={"address": f"api-alias@{domain}", "destinations": [f"u@{domain}"]})
    assert created.status_code == 201
    listed = json.loads(cli(node, "aliases", "list", "--domain", domain, "--json").stdout)
    assert [a["address"] for a in listed] == [f"api-alias@{domain}"]
    r = cli(node, "mailboxes", "add", f"cli-made@{domain}", "--password-stdin", input="Cli-made-pw-123\n")
    assert r.exit_code == 0, r.output
    got = superapi.get(f"/mailboxes?domain={domain}").get_json()
    assert [m["address"] for m in got["items"]] == [f"cli-made@{domain}"] and got["total"] == 1
    r = cli(node, "domains", "list", "--json")
    assert {d["name"]: d for d in json.loads(r.stdout)}[domain] == superapi.get(f"/domains/{domain}").get_json()


def test_bulk_import_is_a_job(node, superapi, domain):
    rows = "\n".join(f"bulk{i}@{domain},Bulk-pw-{i:06d}x" for i in range(30))
    response = superapi.post("/mailboxes/import", json={"csv": "address,password\n" + rows})
    assert response.status_code == 202 and response.headers["Location"].endswith(f"/jobs/{response.get_json()['id']}")
    job = response.get_json()
    for _ in range(600):
        job = superapi.get(f"/jobs/{job['id']}").get_json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert job["status"] == "done", job
    assert job["result"]["imported"] == 30
    assert superapi.get(f"/mailboxes?domain={domain}").get_json()["total"] == 30
    row = audit_rows(node, "mailbox.add", f"bulk0@{domain}")[-1]
    assert row.source == "api" and row.details["via"] == "import" and row.details["token"].startswith("t-super")
    bad = superapi.post("/mailboxes/import", json={"csv": f"address,password\nnot-an-address,x\nok@{domain},y"})
    for _ in range(600):
        job = superapi.get(f"/jobs/{bad.get_json()['id']}").get_json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert job["status"] == "failed" and "nothing was imported" in job["error"]


def test_description_is_served_and_openapi_31(api):
    response = api(None).get("/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.1") and "/api/v1/mailboxes/{address}" in spec["paths"]


def wait_job(client, job_id):
    for _ in range(1200):
        job = client.get(f"/jobs/{job_id}").get_json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {job}")


def test_deploy_and_rollback_are_jobs(node, superapi, api, domain):
    before = superapi.get("/deploys").get_json()
    response = superapi.post("/deploys", json={})
    assert response.status_code == 202
    job = wait_job(superapi, response.get_json()["id"])
    assert job["status"] == "done", job
    after = superapi.get("/deploys").get_json()
    assert after["total"] >= before["total"]
    refused = superapi.post("/deploys/rollback", json={"generation": 999999})
    job = wait_job(superapi, refused.get_json()["id"])
    assert job["status"] == "failed" and "999999" in job["error"]
    scoped = api(make_token(node, "domain_admin", [domain])[1])
    assert_problem(scoped.post("/deploys", json={}), 403)
    assert_problem(scoped.get("/nodes"), 403)
    assert [n["name"] for n in superapi.get("/nodes").get_json()["items"]] == [node.app.config.node_name]
    assert superapi.get(f"/nodes/{node.app.config.node_name}").get_json()["name"] == node.app.config.node_name
    assert any(t["active"] for t in superapi.get("/templates").get_json()["items"])
    assert superapi.get("/certificates").get_json()["total"] >= 1


def test_tokens_in_the_panel(node, superadmin, readonly, api):
    import re

    name = f"panel-{uuid.uuid4().hex[:6]}"
    page = superadmin.post("/api-tokens/add", {"name": name, "role": "readonly", "expires": "2999-01-01"})
    assert page.status_code == 200
    secret = re.search(r'id="token-secret">([^<]+)<', page.get_data(as_text=True)).group(1)
    assert api(secret).get("/domains").status_code == 200
    listing = superadmin.get("/api-tokens/").get_data(as_text=True)
    assert name in listing and secret not in listing
    assert superadmin.post(f"/api-tokens/{name}/revoke").status_code == 200
    assert_problem(api(secret).get("/domains"), 401)
    assert readonly.get("/api-tokens/").status_code == 403
    assert readonly.post("/api-tokens/add", {"name": "x" + name, "role": "superadmin"}).status_code == 403
    bad = superadmin.post("/api-tokens/add", {"name": "bad name!", "role": "readonly"}).get_data(as_text=True)
    assert "invalid token name" in bad


def test_cli_reads_the_audit_journal(node, api, domain):
    name, secret = make_token(node, "domain_admin", [domain])
    assert api(secret).post("/aliases", json={"address": f"au@{domain}", "destinations": [f"x@{domain}"]}
                            ).status_code == 201
    r = cli(node, "audit", "--actor", f"token:{name}", "--source", "api", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["rows"]
    assert [(row["action"], row["target"]) for row in rows] == [("alias.add", f"au@{domain}")]
    r = cli(node, "audit", "--action", "alias.add", "--target", f"au@{domain}")
    assert r.exit_code == 0 and f"token:{name}" in r.stdout and "1 of 1 record(s)" in r.stderr


def test_monitoring_thresholds_from_cli_and_api(node, superapi, api):
    before = node.app.settings.thresholds()
    try:
        r = cli(node, "settings", "thresholds", "monitor_queue_warning=700", "--json")
        assert r.exit_code == 0, r.output
        got = superapi.get("/settings/thresholds").get_json()["thresholds"]["monitor_queue_warning"]
        assert got == {"value": 700, "default": 500, "set": True}
        refused = superapi.patch("/settings/thresholds", json={"values": {"monitor_queue_warning": 9000,
                                                                          "monitor_disk_warning_percent": 50}})
        assert "monitor_queue_critical" in assert_problem(refused, 422)["detail"]
        assert node.app.settings.thresholds()["monitor_disk_warning_percent"]["value"] == 90  # none stored
        changed = superapi.patch("/settings/thresholds", json={"unset": ["monitor_queue_warning"]}).get_json()
        assert changed["thresholds"]["monitor_queue_warning"] == {"value": 500, "default": 500, "set": False}
        r = cli(node, "settings", "thresholds", "no_such=1")
        assert r.exit_code == 1 and "unknown threshold" in r.output
        assert_problem(api(make_token(node, "readonly")[1]).patch("/settings/thresholds", json={}), 403)
    finally:
        node.app.settings.set_thresholds({k: v["value"] for k, v in before.items() if v["set"]},
                                         [k for k, v in before.items() if not v["set"]])


def test_dkim_dns_statistics_queues_templates(node, superapi, api, domain):
    node.app.dkim.generate(domain)
    dkim = superapi.get(f"/domains/{domain}/dkim").get_json()
    assert dkim["domain"] == domain and "v=DKIM1" in dkim["txt"]
    records = superapi.get(f"/domains/{domain}/dns").get_json()["records"]
    assert {"MX", "TXT", "SRV"} <= {r["type"] for r in records}
    assert any(r["name"] == dkim["record"] + "." for r in records)
    stats = superapi.get("/statistics?hours=3").get_json()
    assert len(stats["hours"]) == 3 and set(stats["totals"]) == set(stats["series"])
    assert stats["from"] == stats["hours"][0]  # regression: "from" was missing (found by schemathesis)
    queues = superapi.get("/queues").get_json()
    assert [n["node"] for n in queues["nodes"]] == [node.app.config.node_name]
    assert_problem(superapi.get("/queues/not-a-queue-id!"), 422)
    absent = superapi.post("/queues/actions", json={"action": "hold", "ids": ["4ABCDEF123"]})
    assert "not in the mail queue" in assert_problem(absent, 404)["detail"]
    assert_problem(superapi.post("/queues/actions", json={"action": "delete", "ids": []}), 422)
    active = next(t for t in superapi.get("/templates").get_json()["items"] if t["active"])
    assert superapi.get(f"/templates/{active['name']}").get_json()["body"].strip()
    assert superapi.get("/template-parameters?per_page=500").get_json()["total"] > 0
    missing = superapi.post("/ldap-filters", json={"name": "f1", "ldap_domain": "nope", "filter": "(uid=*)"})
    assert_problem(missing, 404)
    scoped = api(make_token(node, "domain_admin", [domain])[1])
    assert scoped.get(f"/domains/{domain}/dkim").get_json()["selector"] == dkim["selector"]  # its own domain
    assert_problem(scoped.get("/domains/example.org/dkim"), 403)
