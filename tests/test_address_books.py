"""Address books are scoped per domain (issue 24): in the users' address book (rupost_local)
a user finds the mailboxes of its own domain only, whether a CardDAV client lists it or
webmail searches it (the address book, the recipient completion, the user picker); the
template parameter address_book_shared_domains lets a group of domains see each other, and a
domain added later is scoped without a deploy. The GAL's scope: tests/test_directories.py."""
from __future__ import annotations

import base64
import http.cookiejar
import json
import re
import urllib.parse
import urllib.request
import uuid

import pytest
from mailclients import insecure_tls

from adapters.probes import https_request
from rupost.errors import TemplateError

LISTING = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:getetag/></D:prop></D:propfind>'


def _auth(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class CardDAVUser:
    """A CardDAV client (an address book app) signed in as one user."""

    def __init__(self, node, user: str, password: str):
        self.node, self.user, self.password = node, user, password

    def request(self, method: str, path: str, body: bytes | None = None, **headers) -> tuple[int, str]:
        status, _, data = https_request("127.0.0.1", self.node.ports["https"], method, path, body=body,
                                        headers={**_auth(self.user, self.password), **headers}, timeout=30)
        return status, data.decode("utf-8", "replace")

    def book(self, book: str = "rupost_local") -> str:
        return f"/SOGo/dav/{urllib.parse.quote(self.user)}/Contacts/{book}/"

    def listing(self, book: str = "rupost_local") -> set[str]:
        """The cards of a shared address book, as a syncing client lists them (PROPFIND,
        depth 1): SOGo names a user's card after its address. (SOGo 5.8 answers an
        addressbook-query REPORT on a user source with nothing at all, scoped or not.)"""
        status, body = self.request("PROPFIND", self.book(book), LISTING,
                                    **{"Depth": "1", "Content-Type": "application/xml; charset=utf-8"})
        assert status == 207, (status, body)
        hrefs = re.findall(r"<D:href>([^<]*)</D:href>", body, re.I)
        return {urllib.parse.unquote(h.rsplit("/", 1)[1]).lower() for h in hrefs if not h.endswith("/")}

    def card(self, name: str, book: str = "rupost_local") -> tuple[int, str]:
        return self.request("GET", self.book(book) + urllib.parse.quote(name))


class WebmailUser:
    """SOGo's web interface signed in as one user, asking what its pages ask."""

    def __init__(self, node, user: str, password: str):
        self.node, self.user = node, user
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=insecure_tls()),
                                                  urllib.request.HTTPCookieProcessor(self.jar))
        status, _ = self._call("POST", "/SOGo/connect", {"userName": user, "password": password, "rememberLogin": 0})
        assert status == 200, f"webmail login of {user}: {status}"

    def _call(self, method: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
        xsrf = next((c.value for c in self.jar if c.name == "XSRF-TOKEN"), "")
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.node.ports['https']}{path}", method=method,
            data=json.dumps(payload).encode() if payload is not None else None,
            headers={"Content-Type": "application/json", "Accept": "application/json", "X-XSRF-TOKEN": xsrf})
        with self.opener.open(request, timeout=30) as resp:
            text = resp.read().decode("utf-8", "replace")
            return resp.status, json.loads(text) if text.strip() else {}

    def _base(self) -> str:
        return f"/SOGo/so/{urllib.parse.quote(self.user)}"

    def address_book_search(self, text: str) -> set[str]:
        """The Contacts page searching the users' address book."""
        _, data = self._call("POST", f"{self._base()}/Contacts/rupost_local/view",
                             {"value": text, "sort": "c_cn", "asc": 1})
        return {_field(row, data.get("headers"), "c_mail") for row in data.get("headers", [])[1:]}

    def autocomplete(self, text: str) -> set[str]:
        """The mail editor completing a recipient (every address book at once)."""
        _, data = self._call("GET", f"{self._base()}/Contacts/allContactSearch?search={urllib.parse.quote(text)}")
        return {c.get("c_mail", "").lower() for c in data.get("contacts", [])}

    def user_search(self, text: str) -> set[str]:
        """The user picker (sharing a folder, inviting an attendee)."""
        _, data = self._call("GET", f"{self._base()}/usersSearch?search={urllib.parse.quote(text)}")
        return {u.get("c_email", "").lower() for u in data.get("users", [])}


def _field(row: list, headers: list, name: str) -> str:
    return str(row[headers[0].index(name)]).lower()


def add_mailbox(node, domain: str, local: str, display_name: str) -> tuple[str, str]:
    address, password = f"{local}@{domain}", f"pw-{uuid.uuid4().hex[:12]}"
    node.app.mailboxes.add(address, password, 0, display_name=display_name)
    return address, password


def new_domain(node) -> str:
    name = f"d{uuid.uuid4().hex[:10]}.test"
    node.app.domains.add(name)
    return name


def test_each_domain_sees_its_own_users_and_a_shared_group_sees_both(node, domain):
    token = f"Scope{uuid.uuid4().hex[:8]}"  # in every display name: one search matches all of them
    other = new_domain(node)
    ann = add_mailbox(node, domain, "ann", f"Ann {token}")
    amy = add_mailbox(node, domain, "amy", f"Amy {token}")
    bob = add_mailbox(node, other, "bob", f"Bob {token}")
    ann_dav, bob_dav = CardDAVUser(node, *ann), CardDAVUser(node, *bob)

    # isolated: each side finds its own domain's mailboxes (every mailbox of the node's other
    # domains too, before issue 24), over CardDAV and in webmail
    assert ann_dav.listing() == {ann[0], amy[0]}
    assert bob_dav.listing() == {bob[0]}
    assert ann_dav.card(amy[0])[0] == 200 and ann_dav.card(bob[0])[0] == 404
    ann_web = WebmailUser(node, *ann)
    assert ann_web.address_book_search(token) == {ann[0], amy[0]}
    assert ann_web.autocomplete(token) >= {amy[0]} and bob[0] not in ann_web.autocomplete(token)
    assert ann_web.user_search(token) >= {amy[0]} and bob[0] not in ann_web.user_search(token)

    shared = {**node.parameters, "address_book_shared_domains": [[domain, other]]}
    assert node.app.deploys.deploy(node.app.deploys.plan(shared)).result == "applied"
    try:
        assert ann_dav.listing() == bob_dav.listing() == {ann[0], amy[0], bob[0]}
        status, card = ann_dav.card(bob[0])
        assert status == 200 and f"Bob {token}" in card
        ann_web = WebmailUser(node, *ann)
        assert ann_web.address_book_search(token) == {ann[0], amy[0], bob[0]}
        assert bob[0] in ann_web.autocomplete(token) and bob[0] in ann_web.user_search(token)

        # a domain added now is scoped by its rows alone: no file changes, nothing redeployed
        live = node.layout.current.resolve()
        third = new_domain(node)
        cid = add_mailbox(node, third, "cid", f"Cid {token}")
        assert CardDAVUser(node, *cid).listing() == {cid[0]}
        assert cid[0] not in ann_dav.listing()
        assert node.layout.current.resolve() == live
    finally:
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters))

    assert ann_dav.listing() == {ann[0], amy[0]}
    assert ann_dav.card(bob[0])[0] == 404


@pytest.mark.parametrize("groups, expected", [
    (["a.example", "b.example"], "item 1: expected list, got 'a.example'"),
    ([["a.example", "B.example"]], "'B.example' does not match"),
    ([["a.example"]], "group 1 (a.example) names fewer than two domains"),
    ([["a.example", "b.example"], ["b.example", "c.example"]], "b.example is in groups 1 and 2"),
])
def test_a_group_sogo_could_not_honour_is_refused_before_anything_changes(node, groups, expected):
    live = node.layout.current.resolve()
    with pytest.raises(TemplateError, match=re.escape(expected)):
        node.app.deploys.plan({**node.parameters, "address_book_shared_domains": groups})
    assert node.layout.current.resolve() == live


def test_a_deploy_that_restarts_sogo_empties_what_the_previous_sogo_cached(node):
    """SOGo keeps each user's domain in memcached across restarts: after the upgrade that
    gave the sources their domain column, entries the previous SOGo wrote (no domain) would
    show users empty address books until they expired."""
    from pymemcache.client.base import Client

    client = Client(("127.0.0.1", node.ports["memcached"]), connect_timeout=5, timeout=5)
    try:
        client.set("abook-sentinel", b"old", noreply=False)
        # another sogo.conf, nothing else: only SOGo restarts
        shared = {**node.parameters, "address_book_shared_domains": [["a.example", "b.example"]]}
        outcome = node.app.deploys.deploy(node.app.deploys.plan(shared))
        assert outcome.result == "applied" and "sogo" in outcome.reloaded + outcome.started, outcome.as_dict()
        assert client.get("abook-sentinel") is None
        client.set("abook-sentinel", b"new", noreply=False)
        assert node.app.deploys.deploy(node.app.deploys.plan(shared)).result == "unchanged"
        assert client.get("abook-sentinel") == b"new"  # nothing restarted, nothing emptied
    finally:
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters))
        client.close()
