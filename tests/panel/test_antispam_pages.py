"""The allow and deny lists of senders in the panel (ru/en) and the REST API: the same
service as `rupost antispam` (tests/test_antispam_lists.py covers rspamd's use of them)."""
from __future__ import annotations

import uuid

import pytest

from .api_support import ApiClient, make_token


@pytest.fixture
def two_domains(node):
    mine, other = (f"as{uuid.uuid4().hex[:8]}.test" for _ in range(2))
    for name in (mine, other):
        node.app.domains.add(name)
    node.app.antispam_lists.set("deny", "kept@spam.example", other)
    yield mine, other
    for name in (mine, other):
        node.app.domains.remove(name)  # its entries go with it (ON DELETE CASCADE)


def test_a_superadministrator_adds_and_removes_entries_in_the_panel(superadmin, node, two_domains):
    mine, _ = two_domains
    page = superadmin.get("/antispam/").get_data(as_text=True)
    assert "Списки отправителей" in page and "kept@spam.example" in page
    response = superadmin.post("/antispam/set", {"sender": "promo@ads.example", "domain": mine, "kind": "deny",
                                                 "comment": "asked by the director"})
    assert response.status_code == 302
    assert [(e["sender"], e["kind"], e["comment"]) for e in node.app.antispam_lists.list(mine)] == \
        [("promo@ads.example", "deny", "asked by the director")]
    bad = superadmin.post("/antispam/set", {"sender": "not an address", "domain": mine, "kind": "allow"},
                          follow_redirects=True).get_data(as_text=True)
    assert "is not a valid domain name" in bad
    superadmin.post("/antispam/remove", {"sender": "promo@ads.example", "domain": mine})
    assert node.app.antispam_lists.list(mine) == []


def test_a_domain_administrator_sees_and_changes_only_their_domains(admin_factory, make_client, node, two_domains):
    mine, other = two_domains
    client = make_client()
    client.login(admin_factory("domain_admin", [mine]))
    page = client.get("/antispam/").get_data(as_text=True)
    assert "kept@spam.example" not in page
    assert client.post("/antispam/set", {"sender": "x@y.example", "domain": other, "kind": "allow"}).status_code == 403
    assert client.post("/antispam/remove", {"sender": "kept@spam.example", "domain": other}).status_code == 403
    assert client.post("/antispam/set", {"sender": "x@y.example", "domain": "*", "kind": "deny"}).status_code == 403
    assert client.post("/antispam/set", {"sender": "y.example", "domain": mine, "kind": "allow"}).status_code == 302
    assert [e["sender"] for e in node.app.antispam_lists.list(other)] == ["kept@spam.example"]
    assert [e["sender"] for e in node.app.antispam_lists.list(mine)] == ["y.example"]


def test_the_api_resource(panel_app, node, two_domains):
    mine, other = two_domains
    api = ApiClient(panel_app, make_token(node)[1])
    created = api.post("/antispam-lists", json={"sender": "Boss@Partner.Example", "kind": "allow", "domain": mine})
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json()["sender"] == "boss@partner.example"
    assert created.headers["Location"].endswith(f"/antispam-lists/{mine}/boss@partner.example")
    assert api.get(f"/antispam-lists/{mine}/boss@partner.example").get_json()["kind"] == "allow"
    listed = api.get(f"/antispam-lists?domain={mine}").get_json()
    assert listed["total"] == 1 and listed["items"][0]["domain"] == mine
    bad = api.post("/antispam-lists", json={"sender": "a@@b", "kind": "deny", "domain": mine})
    assert bad.status_code == 422 and "is not a mail address" in bad.get_json()["detail"]
    assert api.delete(f"/antispam-lists/{mine}/boss@partner.example").status_code == 204
    assert api.get(f"/antispam-lists/{mine}/boss@partner.example").status_code == 404
    scoped = ApiClient(panel_app, make_token(node, "domain_admin", [mine])[1])
    assert scoped.get(f"/antispam-lists/{other}/kept@spam.example").status_code == 403
    assert scoped.delete(f"/antispam-lists/{other}/kept@spam.example").status_code == 403
    assert scoped.post("/antispam-lists", json={"sender": "z.example", "kind": "deny"}).status_code == 403
    assert node.app.antispam_lists.list(other)[0]["sender"] == "kept@spam.example"


def test_the_dashboard_lists_the_filters_verdicts(superadmin):
    page = superadmin.get("/").get_data(as_text=True)
    assert 'id="filter-stats"' in page and "Спам-фильтр за последние 24 часа" in page and "проверено" in page
