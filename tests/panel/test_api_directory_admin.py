"""An LDAP domain's administrators by group and its Kerberos keytab through the API: for
superadministrators' tokens only (readonly and domain administrators' tokens are refused),
journaled with the token's name, and the keytab checked against a real KDC
(tests/support/mit_kdc.py), stored only when it fits and never returned."""
from __future__ import annotations

import base64
import json
from urllib.parse import urlencode


from .api_support import make_token
from .conftest import audit_rows
from .test_api import assert_problem, cli

GROUP = "CN=Mail admins,OU=Groups,DC=corp,DC=test"
GROUP_QUERY = urlencode({"kind": "group", "value": GROUP})


def test_administrators_by_group_listed_added_and_removed(node, superapi, api, ad_domain, domain):
    path = f"/ldap-domains/{ad_domain}/admin-mappings"
    readonly, scoped = api(make_token(node, "readonly")[1]), api(make_token(node, "domain_admin", [domain])[1])
    for client in (readonly, scoped):
        assert_problem(client.get(path), 403)
        assert_problem(client.post(path, json={"kind": "group", "value": GROUP, "role": "superadmin"}), 403)
        assert_problem(client.delete(f"{path}?{GROUP_QUERY}"), 403)
    assert "at least one mail domain" in assert_problem(
        superapi.post(path, json={"kind": "group", "value": GROUP, "role": "domain_admin"}), 422)["detail"]
    assert_problem(superapi.post(path, json={"kind": "team", "value": GROUP, "role": "readonly"}), 422)
    assert superapi.get(path).get_json()["total"] == 0  # nothing half-added

    made = superapi.post(path, json={"kind": "group", "value": GROUP, "role": "domain_admin", "domains": [domain]})
    assert made.status_code == 201
    assert made.get_json() == {"directory": ad_domain, "kind": "group", "value": GROUP, "role": "domain_admin",
                               "domains": [domain]}
    assert_problem(superapi.post(path, json={"kind": "group", "value": GROUP.lower(), "role": "readonly"}), 409)
    assert superapi.post(path, json={"kind": "user", "value": "jdoe", "role": "readonly"}).status_code == 201
    listed = superapi.get(path).get_json()
    assert listed["total"] == 2 and {m["value"] for m in listed["items"]} == {GROUP, "jdoe"}
    # the CLI reads the same state
    assert {(m["directory"], m["value"]) for m in json.loads(cli(node, "ldap-domains", "admins", "list",
                                                                 "--json").stdout)} >= {(ad_domain, GROUP)}
    assert audit_rows(node, "ldap_admin.map", f"{ad_domain}:group:{GROUP}")[-1].actor.startswith("token:")

    assert superapi.delete(f"{path}?{GROUP_QUERY}").status_code == 204
    assert_problem(superapi.delete(f"{path}?{GROUP_QUERY}"), 404)
    assert [m["value"] for m in superapi.get(path).get_json()["items"]] == ["jdoe"]
    assert audit_rows(node, "ldap_admin.unmap", f"{ad_domain}:group:{GROUP}")[-1].actor.startswith("token:")
    assert_problem(superapi.get(f"/ldap-domains/nx{ad_domain}/admin-mappings"), 404)
    assert_problem(superapi.post(f"/ldap-domains/nx{ad_domain}/admin-mappings",
                                 json={"kind": "user", "value": "x", "role": "readonly"}), 404)


def test_kerberos_keytab_checked_set_shown_without_keys_and_turned_off(node, superapi, api, ad_domain,
                                                                       domain, kdc, keytab):
    path = f"/ldap-domains/{ad_domain}/kerberos"
    encoded = base64.b64encode(keytab).decode()
    readonly, scoped = api(make_token(node, "readonly")[1]), api(make_token(node, "domain_admin", [domain])[1])
    assert readonly.get(path).get_json() == {"name": ad_domain, "enabled": False}
    assert_problem(scoped.get(path), 403)
    for client in (readonly, scoped):
        assert_problem(client.request("PUT", path, json={"keytab": encoded, "kdcs": [kdc.address]}), 403)
        assert_problem(client.delete(path), 403)

    refused = assert_problem(superapi.request("PUT", path, json={"keytab": "not base64!"}), 422)
    assert "keytab" in refused["errors"]["json"]
    assert "not a keytab" in assert_problem(superapi.request("PUT", path, json={
        "keytab": base64.b64encode(b"\x05\x02 no keytab").decode(), "kdcs": [kdc.address]}), 422)["detail"]
    closed = kdc.address.rsplit(":", 1)[0] + ":9"  # nothing listens: the KDC is really asked
    assert "no KDC answered" in assert_problem(superapi.request("PUT", path, json={
        "keytab": encoded, "kdcs": [closed]}), 422)["detail"]
    assert superapi.get(path).get_json()["enabled"] is False  # nothing stored

    answer = superapi.request("PUT", path, json={"keytab": encoded, "kdcs": [kdc.address]})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    state = answer.get_json()
    host = node.app.settings.client_mail_host() or node.app.settings.mail_host()
    assert state["enabled"] is True and state["realm"] == kdc.realm and state["kdcs"] == [kdc.address]
    assert sorted(state["principals"]) == [f"imap/{host}@{kdc.realm}", f"smtp/{host}@{kdc.realm}"]
    for shown in (answer, superapi.get(path), superapi.get(f"/ldap-domains/{ad_domain}")):
        assert encoded[:40] not in shown.get_data(as_text=True) and '"keytab"' not in shown.get_data(as_text=True)
    assert superapi.get(f"/ldap-domains/{ad_domain}").get_json()["kerberos"]["realm"] == kdc.realm
    assert audit_rows(node, "ldap_domain.kerberos.set", ad_domain)[-1].actor.startswith("token:")

    assert superapi.delete(path).get_json() == {"name": ad_domain, "enabled": False}
    assert readonly.get(path).get_json() == {"name": ad_domain, "enabled": False}
    assert audit_rows(node, "ldap_domain.kerberos.off", ad_domain)[-1].actor.startswith("token:")
    assert_problem(superapi.delete(f"/ldap-domains/nx{ad_domain}/kerberos"), 404)
