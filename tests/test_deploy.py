"""The deploy pipeline on a running node: no-change redeploys, targeted reloads,
rejected templates that change nothing, validation failures, probe failure + rollback."""
from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
import uuid

import pytest
import yaml

from mailclients import message, smtp, wait_for_subject
from rupost.deploy.pipeline import DeployInterrupted
from rupost.errors import ComponentCheckError, ConflictError, DeployError, TemplateError
from rupost.templating import load_document
from support.evidence import reload_evidence


def installed_state(node) -> dict:
    """The live generation and a hash of every installed file."""
    live = node.layout.current.resolve()
    files = {str(p.relative_to(live)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(live.rglob("*")) if p.is_file()}
    return {"generation": live.name, "files": files}


def evidence(node):
    return reload_evidence(node.layout, node.app.backend, node.app.adapters)


def standard_with(node, mutate) -> object:
    data = yaml.safe_load(node.app.templates.show("standard")["body"])
    mutate(data)
    return load_document(yaml.safe_dump(data, sort_keys=False), "test-template")


def test_new_mailbox_works_immediately_with_zero_reloads(node, domain):
    before = evidence(node)
    address, password = f"fresh@{domain}", "fresh-password-1"
    node.app.mailboxes.add(address, password)
    node.app.aliases.add(f"team@{domain}", [address])
    subject = f"fresh {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", f"team@{domain}", subject)) == {}
    wait_for_subject(node.ports["imaps"], address, password, subject)
    assert evidence(node) == before


def test_no_change_redeploy_touches_nothing(node):
    # what earlier tests left for a deploy (the first impersonation account turns on dovecot's
    # master passdb, a feature switch by design) goes live first, whatever ran before
    node.app.deploys.deploy()
    state, before = installed_state(node), evidence(node)
    result = node.app.deploys.deploy()
    assert result.result == "unchanged"
    assert result.reloaded == [] and result.started == []
    assert installed_state(node) == state
    assert evidence(node) == before


def test_plan_shows_a_diff_and_changes_nothing(node):
    state = installed_state(node)
    plan = node.app.deploys.plan({"reject_unknown_sender_domain": False, "message_size_limit": 20971520})
    assert set(plan.changed) == {"postfix", "nginx"}
    assert "+message_size_limit = 20971520" in plan.diffs["postfix"]
    assert "-message_size_limit = 52428800" in plan.diffs["postfix"]
    assert installed_state(node) == state


def test_parameter_change_reloads_only_affected_components(node):
    params = {"reject_unknown_sender_domain": False, "message_size_limit": 31457280}
    before = evidence(node)
    try:
        result = node.app.deploys.deploy(node.app.deploys.plan(params))
        assert result.result == "applied"
        assert result.reloaded == ["postfix", "nginx"]
        after = evidence(node)
        assert after["postfix"]["reloads"] == before["postfix"]["reloads"] + 1
        assert after["nginx"]["reloads"] == before["nginx"]["reloads"] + 1
        for name in ("dovecot", "haproxy", "memcached", "sogo"):
            assert after[name] == before[name], name
    finally:
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters))


@pytest.mark.parametrize("params, expected", [
    ({"message_size_limit": "abc"}, "parameters.message_size_limit: expected an integer, got 'abc'"),
    ({"message_size_limit": 10}, "parameters.message_size_limit: 10 is below the minimum 1048576"),
    ({"no_such_parameter": 1}, "parameters.no_such_parameter: unknown parameter"),
    ({"tls_protocols": ["SSLv3"]}, "components.nginx.tls.protocols[0]: 'SSLv3' is not one of"),
])
def test_bad_parameter_is_rejected_with_its_path_and_nothing_changes(node, params, expected):
    state, before = installed_state(node), evidence(node)
    with pytest.raises(TemplateError) as err:
        node.app.deploys.deploy(node.app.deploys.plan({"reject_unknown_sender_domain": False, **params}))
    assert expected in str(err.value)
    assert installed_state(node) == state
    assert evidence(node) == before


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["components"]["postfix"]["main"].update({"smtpd_tls_cert_fle": "/x"}),
     "components.postfix.main.smtpd_tls_cert_fle: unknown key"),
    (lambda d: d["components"]["nginx"]["web"].update({"serv_name": "x"}),
     "components.nginx.web.serv_name: unknown key"),
    (lambda d: d["components"]["haproxy"]["listeners"][0].update({"bind": "{{ node.no_such_name }}"}),
     "components.haproxy.listeners[0].bind: 'dict object' has no attribute 'no_such_name'"),
    (lambda d: d["components"]["memcached"].update({"memory_mb": "{{ ''.__class__.__mro__ }}"}),
     "components.memcached.memory_mb"),
    (lambda d: d.update({"kind": "Something"}), "kind: 'ConfigurationTemplate' was expected"),
])
def test_bad_template_is_rejected_with_its_key_path(node, mutate, expected):
    state = installed_state(node)
    doc = None
    with pytest.raises(TemplateError) as err:
        doc = standard_with(node, mutate)
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters, document=doc))
    assert expected in str(err.value)
    assert installed_state(node) == state


def test_component_checker_failure_stops_the_deploy(node):
    state, before = installed_state(node), evidence(node)
    doc = standard_with(node, lambda d: d["components"]["dovecot"]["settings"].update({"no_such_setting": 1}))
    with pytest.raises(DeployError) as err:
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters, document=doc))
    assert "dovecot: configuration check failed" in str(err.value)
    assert "Unknown setting: no_such_setting" in str(err.value)
    assert "nothing was changed" in str(err.value)
    assert installed_state(node) == state
    assert evidence(node) == before
    assert not [p for p in node.layout.generations.iterdir() if p.name.startswith(".")]


def test_a_plan_is_checked_by_every_component_before_anything_changes(node):
    state, before = installed_state(node), evidence(node)
    plan = node.app.deploys.plan(node.parameters, check=True)
    assert plan.checked == list(node.app.adapters)
    doc = standard_with(node, lambda d: d["components"]["dovecot"]["settings"].update({"no_such_setting": 1}))
    with pytest.raises(ComponentCheckError) as err:
        node.app.deploys.plan(node.parameters, document=doc, check=True)
    assert err.value.component == "dovecot" and "no_such_setting" in str(err.value)
    assert installed_state(node) == state and evidence(node) == before
    assert not [p for p in node.layout.generations.iterdir() if p.name.startswith(".")]


def test_a_deploy_applies_only_the_plan_that_was_shown(node):
    shown = node.app.deploys.plan()
    other = node.app.deploys.plan({**node.parameters, "message_size_limit": 20971520})
    assert other.digest != shown.digest
    state = installed_state(node)
    with pytest.raises(ConflictError, match="changed since that plan was shown"):
        node.app.deploys.deploy(expected=other.digest)
    assert installed_state(node) == state
    assert node.app.deploys.deploy(expected=shown.digest).result == "unchanged"


def break_imap(d):  # valid for nginx -t, but IMAPS then leads nowhere
    d["components"]["nginx"]["mail_proxies"][0]["upstream"] = "127.0.0.1:9"


def test_sigterm_after_the_switch_returns_the_node_to_its_previous_generation(node, mailbox):
    """The signal arrives while the new generation is live and being probed: the cleanup armed
    at the switch returns the node, then the interruption goes on to end the process."""
    state = installed_state(node)
    live = node.layout.current.resolve()
    doc = standard_with(node, break_imap)  # its IMAPS probe keeps failing: time for the signal

    def interrupt_after_the_switch():
        deadline = time.monotonic() + 60
        while node.layout.current.resolve() == live and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    signaller = threading.Thread(target=interrupt_after_the_switch, daemon=True)
    signaller.start()
    with pytest.raises(DeployInterrupted) as err:
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters, document=doc))
    signaller.join(10)
    assert "rolled back to generation" in "\n".join(getattr(err.value, "__notes__", []))
    assert installed_state(node) == state
    history = node.app.deploys.history(1)[0]
    assert history["result"] == "rolled_back" and "deploy interrupted" in history["error"]
    assert all(p.ok for p in node.app.component_runtime.run_probes())
    address, password = mailbox("afterinterrupt")
    subject = f"after interrupt {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        client.send_message(message("someone@example.org", address, subject))
    wait_for_subject(node.ports["imaps"], address, password, subject)


def test_probe_failure_rolls_back_to_the_previous_generation(node, mailbox):
    state = installed_state(node)
    doc = standard_with(node, break_imap)
    with pytest.raises(DeployError) as err:
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters, document=doc))
    text = str(err.value)
    assert "probe failed: imaps" in text and "rolled back to generation" in text
    assert installed_state(node) == state
    history = node.app.deploys.history(1)[0]
    assert history["result"] == "rolled_back"
    address, password = mailbox("afterrollback")
    subject = f"after rollback {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        client.send_message(message("someone@example.org", address, subject))
    wait_for_subject(node.ports["imaps"], address, password, subject)


def test_health_of_a_listener_follows_only_the_components_it_needs(node):
    """A peer routes a listener's clients around a node by /health/<listener>: with SOGo down
    (a restart after every SOGo change) HTTPS fails over and SMTP and IMAP stay; /health, the
    node as a whole, reports SOGo too. Real HAProxy, its runtime API taking SOGo's check down."""
    import http.client
    import time

    from adapters.haproxy import LOCAL_HEALTH, runtime_command

    def status(path: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", node.ports["health"], timeout=5)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()

    every = ("/health", "/health/smtp", "/health/submissions", "/health/imaps", "/health/sieve", "/health/https")
    deadline = time.monotonic() + 15  # checks rise after 2 passes
    while any(status(path) != 200 for path in every) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert {path: status(path) for path in every} == dict.fromkeys(every, 200)
    assert status("/health/nothing") == 404
    runtime_command(node.layout, f"set server {LOCAL_HEALTH}/sogo state maint")
    try:
        assert {path: status(path) for path in every} == {
            "/health": 503, "/health/smtp": 200, "/health/submissions": 200, "/health/imaps": 200,
            "/health/sieve": 200, "/health/https": 503}
    finally:
        runtime_command(node.layout, f"set server {LOCAL_HEALTH}/sogo state ready")
