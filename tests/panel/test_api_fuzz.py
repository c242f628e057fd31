"""schemathesis against the live API: `rupost panel serve` (gunicorn, TLS) on the test node.

Every operation of /api/v1/openapi.json, a bounded number of generated requests each (the
CI budget), with schemathesis's default check (no 5xx) plus status code, content type and
response schema conformance: nothing answered outside the description. Run once with a
superadministrator's token and once with a domain administrator's scoped to one domain,
which must never see or change an object of another domain."""
from __future__ import annotations

import json
import uuid

import pytest
import requests
import schemathesis
import urllib3
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                               status_code_conformance)

from .api_support import make_token

EXAMPLES = 2  # per operation and token: ~25 operations x 2 tokens, a minute or two on the loaded CI machine
# operations the fuzzer does not send, and why (each is tested in tests/panel/test_api.py):
NOT_FUZZED = {
    "POST /api/v1/deploys": "a real deploy of the session's node, reloading its daemons under the other tests",
    "POST /api/v1/deploys/rollback": "would return the session's node to an earlier generation",
    "POST /api/v1/groupware-migrations": "a job connecting the node to whatever server the request names "
                                         "(tests/panel/test_exchange_api.py)",
    "POST /api/v1/ldap-domains": "binds to the generated server names: name lookups and connections would leave "
                                 "the machine (tests/panel/test_api_admin.py adds one against a local slapd)",
    "POST /api/v1/migrations": "connects to the generated source servers: traffic would leave the machine "
                               "(tests/panel/test_api_admin.py runs one against a closed loopback port)",
    "GET /api/v1/domains/{name}/dns/check": "asks the generated name server or the system's resolver: queries "
                                           "would leave the machine (tests/panel/test_api_maintenance.py asks a "
                                           "name server on loopback)",
}
# fuzzed although they act on LDAP domains: a generated name is unknown (404) before anything is done, and
# generated keytab bytes fail `klist -k` before any KDC is asked (PUT /api/v1/ldap-domains/{name}/kerberos)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # the node's self-signed panel certificate


@pytest.fixture(scope="session")
def api_base(served):
    return f"https://127.0.0.1:{served}"


@pytest.fixture(scope="session")
def api_schema(api_base):
    return schemathesis.openapi.from_url(f"{api_base}/api/v1/openapi.json", verify=False, timeout=30)


@pytest.fixture(scope="session")
def http():
    with requests.Session() as session:
        session.verify = False
        yield session


@pytest.fixture(scope="module", autouse=True)
def leaves_no_domains(node):
    """The session's node is shared with other suites: the domains the fuzzer created (the
    description's examples, such as example.ru, are sent first) go, with what it put in them,
    and so do the push endpoints and impersonation accounts it added."""
    before = {d["name"] for d in node.app.domains.list()}
    pushes, impersonation = ({i["name"] for i in node.app.push.endpoints()},
                             {i["name"] for i in node.app.impersonation.list()})
    yield
    app = node.app
    # push endpoints and impersonation accounts switch dovecot plugins on at the next deploy of the shared node
    for name in sorted({i["name"] for i in app.push.endpoints()} - pushes):
        app.push.remove(name)
    for name in sorted({i["name"] for i in app.impersonation.list()} - impersonation):
        app.impersonation.remove(name)
    for name in sorted({d["name"] for d in app.domains.list()} - before):
        for item in app.distribution_lists.list(name):
            app.distribution_lists.remove(item["address"])
        for item in app.aliases.list(name):
            app.aliases.remove(item["address"])
        for item in app.mailboxes.list(name, limit=100_000):
            app.mailboxes.remove(item["address"])
        app.domains.remove(name)


@pytest.fixture(scope="session")
def superadmin_secret(node):
    return make_token(node)[1]


@pytest.fixture(scope="session")
def scoped(node):
    """A domain administrator's token for one domain, and another domain with a mailbox, an
    alias and a distribution list it must never see nor change."""
    own, other = f"fz{uuid.uuid4().hex[:8]}.test", f"fo{uuid.uuid4().hex[:8]}.test"
    for name in (own, other):
        node.app.domains.add(name)
        node.app.mailboxes.add(f"user@{name}", "Fuzz-pw-1234567")
        node.app.aliases.add(f"alias@{name}", [f"user@{name}"])
        node.app.distribution_lists.add(f"list@{name}", members=[f"user@{name}"])
    return {"own": own, "other": other, "secret": make_token(node, "domain_admin", [own])[1]}


def snapshot(node, domain):
    app = node.app
    return json.dumps({"domain": app.domains.show(domain), "mailboxes": app.mailboxes.list(domain),
                       "aliases": app.aliases.list(domain), "lists": app.distribution_lists.list(domain)},
                      sort_keys=True)


def fuzz(api_schema, call) -> dict[str, str]:
    """Every operation of the description, EXAMPLES generated cases each through `call(case)`;
    the failures by operation (all operations run, so one failure hides no other)."""
    failures = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if operation.label in NOT_FUZZED:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
        def run(case):
            call(case)

        try:
            run()
        except Exception:  # a check's failure, with the case that found it
            import traceback
            failures[operation.label] = traceback.format_exc()[-3000:]
    return failures


def send(case, http, base, secret):
    """The case over our own requests session, then schemathesis's checks on the answer.
    (case.call counts the session's pooled connections through urllib3 internals that
    urllib3-future, installed beside it by niquests, does not have.)"""
    headers = {"Authorization": f"Bearer {secret}"}
    request = {**case.as_transport_kwargs(base_url=base, headers=headers), "verify": False, "timeout": 60}
    response = http.request(**request)
    case.validate_response(response, checks=CHECKS, headers=headers)
    return response


@pytest.fixture
def thresholds_kept(node):
    """The session's node is shared with other suites: the fuzzer's thresholds are undone."""
    before = node.app.settings.thresholds()
    yield
    node.app.settings.set_thresholds({k: v["value"] for k, v in before.items() if v["set"]},
                                     [k for k, v in before.items() if not v["set"]])


@pytest.fixture
def retention_kept(node):
    """The statistics retention and the LDAP sync's safety share the fuzzer sets are undone too."""
    before, share = node.app.stats.retention_days(), node.app.directories.max_drop_share()
    yield
    node.app.stats.set_retention(before)
    node.app.directories.set_max_drop_share(share)


@pytest.fixture
def node_settings_kept(node, settings_kept):
    """The mail host, the template's values (sizing apply), a pending SRS rotation
    (settings_kept) and the active DH parameters the fuzzer sets are put back too."""
    dhparam = next(d["name"] for d in node.app.dhparams.list() if d["active"])
    yield
    node.app.dhparams.activate(dhparam)


def test_superadmin_token(api_schema, api_base, http, superadmin_secret, thresholds_kept, retention_kept,
                          node_settings_kept):
    def call(case):
        send(case, http, api_base, superadmin_secret)

    failures = fuzz(api_schema, call)
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())


def test_domain_admin_token(api_schema, api_base, http, scoped, node):
    before = snapshot(node, scoped["other"])

    def call(case):
        response = send(case, http, api_base, scoped["secret"])
        assert scoped["other"] not in response.text, (case.method, case.path, response.text[:500])

    failures = fuzz(api_schema, call)
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
    assert snapshot(node, scoped["other"]) == before
