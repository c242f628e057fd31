"""Deploys that cannot break a node: component checkers, rollback under traffic, drift,
rollback by hand, locking, custom templates as untrusted input."""
from __future__ import annotations

import re
import threading
import time
import uuid

import pytest
import yaml

from mailclients import IMAPSFrom, message, smtp, wait_for_subject
from rupost.errors import ConflictError, DeployError, TemplateError
from rupost.templating import load_document
from test_deploy import evidence, installed_state


def standard_data(node) -> dict:
    return yaml.safe_load(node.app.templates.show("standard")["body"])


def doc_with(node, mutate):
    data = standard_data(node)
    mutate(data)
    return load_document(yaml.safe_dump(data, sort_keys=False), "test-template")


def deliver_one(node, mailbox):
    address, password = mailbox(f"alive{uuid.uuid4().hex[:6]}")
    subject = f"still flowing {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", address, subject)) == {}
    wait_for_subject(node.ports["imaps"], address, password, subject)


@pytest.mark.parametrize("component, mutate, checker_says", [
    ("postfix", lambda c: c["postfix"].setdefault("extra", {}).update(main="this line is not a parameter"),
     "postfix: configuration check failed"),
    ("dovecot", lambda c: c["dovecot"].update(extra="protocol imap {\n  unknown_thing = 1\n}"),
     "Unknown setting: unknown_thing"),
    ("nginx", lambda c: c["nginx"].setdefault("extra", {}).update(https_server="bogus_directive on;"),
     'unknown directive "bogus_directive"'),
    ("haproxy", lambda c: c["haproxy"].update(extra="frontend broken\n    bind 127.0.0.1:notaport"),
     "haproxy: configuration check failed"),
])
def test_invalid_native_config_is_rejected_by_the_components_checker(node, mailbox, component, mutate,
                                                                     checker_says):
    state, before = installed_state(node), evidence(node)
    doc = doc_with(node, lambda d: mutate(d["components"]))
    with pytest.raises(DeployError) as err:
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters, document=doc))
    assert checker_says in str(err.value) and "nothing was changed on this node" in str(err.value)
    assert installed_state(node) == state and evidence(node) == before
    deliver_one(node, mailbox)


class Traffic:
    """A bounded stream of messages; each has a unique subject and is retried on temporary failure,
    so afterwards every accepted message must be in the mailbox exactly once."""

    def __init__(self, node, address, count=40, pause=0.05):
        self.node, self.address, self.count, self.pause = node, address, count, pause
        self.accepted: list[str] = []
        self.failures: list[str] = []
        self.tag = uuid.uuid4().hex[:8]
        self.stop = threading.Event()  # set: no new message after the one in flight
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        for i in range(self.count):
            if self.stop.is_set():
                break
            subject = f"traffic {self.tag} {i:03d}"
            for attempt in range(20):
                try:
                    with smtp(self.node.ports["smtp"]) as client:
                        client.send_message(message("load@example.org", self.address, subject))
                    self.accepted.append(subject)
                    break
                except Exception as exc:  # connection refused/reset during a reload: retry like an MTA
                    self.failures.append(f"{subject}: {exc}")
                    time.sleep(0.25)
            time.sleep(self.pause)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.thread.join(timeout=180)


def count_subjects(node, address, password, tag, expected, timeout=60) -> dict:
    deadline = time.monotonic() + timeout
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"])
    imap.login(address, password)
    try:
        while True:
            imap.select("INBOX")
            _, data = imap.search(None, "SUBJECT", f'"traffic {tag}"')
            ids = data[0].split()
            if len(ids) >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        counts: dict[str, int] = {}
        for msg_id in ids:
            _, fetched = imap.fetch(msg_id, "(BODY[HEADER.FIELDS (SUBJECT)])")
            subject = fetched[0][1].decode().split(":", 1)[1].strip()
            counts[subject] = counts.get(subject, 0) + 1
        return counts
    finally:
        imap.logout()


def test_every_message_is_delivered_exactly_once_through_good_and_rolled_back_deploys(node, mailbox):
    address, password = mailbox("traffic")
    good = node.app.deploys.plan({**node.parameters, "message_size_limit": 41943040})
    broken = doc_with(node, lambda d: d["components"]["nginx"]["mail_proxies"][0].update(upstream="127.0.0.1:9"))
    with Traffic(node, address, count=40) as traffic:
        time.sleep(0.5)
        assert node.app.deploys.deploy(good).result == "applied"
        with pytest.raises(DeployError, match="rolled back"):
            node.app.deploys.deploy(node.app.deploys.plan({**node.parameters, "message_size_limit": 41943040},
                                                          document=broken))
    node.app.deploys.deploy(node.app.deploys.plan(node.parameters))
    assert len(traffic.accepted) == 40, traffic.failures
    counts = count_subjects(node, address, password, traffic.tag, 40)
    assert sorted(counts) == sorted(traffic.accepted)
    assert set(counts.values()) == {1}, {s: n for s, n in counts.items() if n != 1}


def test_a_reload_only_deploy_refuses_no_connection(node, mailbox):
    """A deploy that only reloads (the message size limit: postfix's main.cf and nginx's body
    size) keeps every listener open: no SMTP or IMAPS connection around it is refused or
    dropped, so no message needed a retry and every login succeeded."""
    address, password = mailbox("reloadtraffic")
    changed = {**node.parameters, "message_size_limit": 41943040}
    logins = {"ok": 0, "failed": []}
    stop_logins = threading.Event()

    def log_in_and_out():
        for _ in range(500):  # bounded; stopped when both deploys are done
            if stop_logins.is_set():
                return
            try:
                imap = IMAPSFrom("127.0.0.1", node.ports["imaps"])
                imap.login(address, password)
                imap.logout()
                logins["ok"] += 1
            except Exception as exc:
                logins["failed"].append(str(exc))
            time.sleep(0.02)

    imap_thread = threading.Thread(target=log_in_and_out, daemon=True)
    with Traffic(node, address, count=300, pause=0.02) as traffic:
        imap_thread.start()
        while len(traffic.accepted) < 3 and traffic.thread.is_alive():
            time.sleep(0.05)
        outcome = node.app.deploys.deploy(node.app.deploys.plan(changed))
        back = node.app.deploys.deploy(node.app.deploys.plan(node.parameters))
        traffic.stop.set()
        stop_logins.set()
    imap_thread.join(timeout=60)
    assert outcome.result == "applied" and back.result == "applied"
    assert outcome.started == [] and back.started == [], (outcome.started, back.started)
    assert {"postfix", "nginx"} <= set(outcome.reloaded), outcome.reloaded
    assert traffic.failures == []
    assert logins["failed"] == [] and logins["ok"] > 0
    counts = count_subjects(node, address, password, traffic.tag, len(traffic.accepted))
    assert sorted(counts) == sorted(traffic.accepted) and set(counts.values()) == {1}


def test_mail_deferred_while_dovecot_was_away_is_retried_when_a_deploy_starts_it(node, mailbox):
    """LMTP away (dovecot stopped, as during a deploy's restart): postfix accepts and defers
    the message, and would try it again only after its backoff (300 s). The deploy that
    starts dovecot again has postfix try the deferred mail at once."""
    from support.cluster import wait_until

    address, password = mailbox(f"away{uuid.uuid4().hex[:6]}")
    subject = f"deferred while away {uuid.uuid4().hex}"
    node.app.component_runtime.stop(["dovecot"])
    try:
        with smtp(node.ports["smtp"]) as client:
            assert client.send_message(message("someone@example.org", address, subject)) == {}
        assert wait_until(lambda: any(m["queue"] == "deferred" and address in m["recipients"]
                                      for m in node.app.mailqueues.list()["messages"]), 30, 0.5), \
            node.app.mailqueues.list()
    finally:
        outcome = node.app.deploys.deploy(node.app.deploys.plan(node.parameters))
    assert "dovecot" in outcome.started, outcome.as_dict()
    # well inside postfix's backoff: only the retry the deploy asked for delivers it this soon
    wait_for_subject(node.ports["imaps"], address, password, subject, timeout=60)


def test_rollback_restarts_a_daemon_the_failed_generation_left_throttled(node, mailbox):
    """Every checker passes, but each smtpd dies at its first connection (proxymap refuses the
    list-policy table, which the template's own proxy_read_maps leaves out); postfix's master
    then throttles smtpd for a minute, and a reload back to the previous files keeps the
    throttle: the rollback restarts postfix."""
    broken = doc_with(node, lambda d: d["components"]["postfix"]["main"].update(
        proxy_read_maps="$virtual_alias_maps $virtual_mailbox_maps $virtual_mailbox_domains"))
    with pytest.raises(DeployError) as err:
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters, document=broken))
    # port 25's probe or submission's, whichever met a new smtpd first: an smtpd of the previous
    # files, not yet gone after the reload, may still answer one of them
    assert re.search(r"probe failed: (smtp|submissions):", str(err.value)), err.value
    assert "rolled back to generation" in str(err.value)
    steps = [s.step for s in err.value.outcome.steps]
    assert "stop postfix" in steps and "start postfix" in steps, steps
    assert all(p.ok for p in node.app.component_runtime.run_probes())
    deliver_one(node, mailbox)


def test_a_deploy_refuses_databases_older_than_the_code(node, monkeypatch):
    """The template's lookups call functions the data migrations create: deployed against
    an older schema, every message would be deferred. (The outdated schema is simulated:
    the node's databases are shared by the whole test module.)"""
    from rupost.db import migrate

    real = migrate.status(node.app.dbs)
    assert all(row["up_to_date"] for row in real)
    behind = [dict(row, up_to_date=False, current="0001_data") if row["kind"] == "data" else row for row in real]
    monkeypatch.setattr(migrate, "status", lambda dbs: behind)
    service = type(node.app.deploys)(node.app)  # a fresh service: the check is made once per process
    state = installed_state(node)
    with pytest.raises(DeployError) as err:
        service.deploy(service.plan(node.parameters))
    assert "rupost db upgrade" in str(err.value) and "(at 0001_data)" in str(err.value)
    assert installed_state(node) == state


def test_hand_edits_are_drift_and_need_force(node):
    conf = node.layout.current / "dovecot" / "dovecot.conf"
    original = conf.read_text()
    try:
        conf.write_text(original + "# tuned by hand\n")
        drift = node.app.deploys.drift()
        assert drift == [{"component": "dovecot", "path": "dovecot.conf", "state": "modified"}]
        with pytest.raises(DeployError) as err:
            node.app.deploys.deploy()
        assert "dovecot/dovecot.conf (modified)" in str(err.value) and "--force" in str(err.value)
        assert conf.read_text().endswith("# tuned by hand\n")  # not overwritten
        result = node.app.deploys.deploy(force=True)
        assert result.result == "applied" and "dovecot" in result.reloaded
        assert conf.read_text() == original and node.app.deploys.drift() == []
    finally:
        if conf.read_text() != original:
            conf.write_text(original)


def test_missing_file_is_drift(node):
    lookup = node.layout.current / "postfix" / "pgsql-aliases.cf"
    saved = lookup.read_bytes()
    lookup.unlink()
    try:
        assert {"component": "postfix", "path": "pgsql-aliases.cf", "state": "missing"} in node.app.deploys.drift()
    finally:
        lookup.write_bytes(saved)
    assert node.app.deploys.drift() == []


def test_rollback_by_hand_returns_to_the_exact_previous_files(node):
    before = installed_state(node)
    changed = node.app.deploys.deploy(node.app.deploys.plan({**node.parameters, "sogo_workers": 2}))
    assert changed.result == "applied" and changed.reloaded == ["sogo"]
    assert installed_state(node) != before
    result = node.app.deploys.rollback()
    assert result.result == "applied" and result.reloaded == ["sogo"]
    after = installed_state(node)
    assert after["files"] == before["files"] and after["generation"] == before["generation"]
    with pytest.raises(DeployError, match="is not kept on this node"):
        node.app.deploys.rollback(999999)
    node.app.deploys.deploy(node.app.deploys.plan(node.parameters))


def test_only_one_deploy_at_a_time(node):
    holding, release = threading.Event(), threading.Event()

    def hold():
        with node.app.deploys.lock("deploy"):
            holding.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert holding.wait(10)
        with pytest.raises(DeployError) as err:
            node.app.deploys.deploy()
        assert "another deploy is running on node node1: rupost deploy by test" in str(err.value)
    finally:
        release.set()
        t.join()
    assert node.app.deploys.deploy().result == "unchanged"


CUSTOM = """
apiVersion: rupost/v1
kind: ConfigurationTemplate
extends: standard
metadata: {name: corp, version: 1.0.0, description: "standard with a smaller message limit"}
parameters:
  message_size_limit: {type: integer, default: 20971520, min: 1048576}
components:
  postfix:
    extra:
      main: "# corporate policy: nothing else"
"""


@pytest.mark.parametrize("text, expected", [
    (CUSTOM.replace("# corporate policy: nothing else", "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
     "components.postfix.extra.main"),
    (CUSTOM.replace("extra:", "extras:"), "components.postfix.extras: unknown key"),
    (CUSTOM.replace("default: 20971520", "default: big"), "parameters.message_size_limit.default: expected an integer"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b]\n",
     "YAML anchors and aliases are not allowed"),
    (CUSTOM + "#" * (300 * 1024), "template is larger than 256 KiB"),
    (CUSTOM.replace("extends: standard", "extends: nonexistent"), "extends: template nonexistent does not exist"),
    (CUSTOM.replace("name: corp,", "name: standard,"), "is the name of a builtin template"),
    (CUSTOM.replace("metadata: {", "metadata: {builtin: true, "), "only templates shipped with RuPost are builtin"),
])
def test_untrusted_templates_are_rejected_and_nothing_is_stored(node, text, expected):
    before = node.app.templates.list()
    with pytest.raises((TemplateError, ConflictError)) as err:
        node.app.templates.import_text(text, "upload.yaml")
    assert expected in str(err.value)
    assert node.app.templates.list() == before


def test_custom_template_lifecycle(node, mailbox):
    t = node.app.templates
    imported = t.import_text(CUSTOM, "corp.yaml")
    assert imported == {"name": "corp", "version": "1.0.0", "extends": "standard@1.0.0",
                        "raw_snippets": ["components.postfix.extra.main"]}  # named: code on every node
    with pytest.raises(ConflictError, match="versions are immutable"):
        t.import_text(CUSTOM, "corp.yaml")
    assert t.export("corp") == CUSTOM
    diff = t.diff("standard", "corp")
    assert "-    default: 52428800" in diff and "+    default: 20971520" in diff
    t.activate("corp", "1.0.0")
    try:
        with pytest.raises(ConflictError, match="is the active template"):
            t.remove("corp", "1.0.0")
        plan = node.app.deploys.plan({"reject_unknown_sender_domain": False})
        assert plan.changed == ["postfix", "nginx"]
        assert "+message_size_limit = 20971520" in plan.diffs["postfix"]
        assert "+# corporate policy: nothing else" in plan.diffs["postfix"]
        assert node.app.deploys.deploy(plan).result == "applied"
        deliver_one(node, mailbox)
    finally:
        t.activate("standard", "1.0.0")
        node.app.deploys.deploy(node.app.deploys.plan(node.parameters))
    with pytest.raises(ConflictError, match="is builtin"):
        t.remove("standard", "1.0.0")
    t.remove("corp", "1.0.0")
    assert [x["name"] for x in t.list()] == ["standard"]


@pytest.mark.parametrize("component", ["nginx", "haproxy", "dovecot"])
def test_a_signal_reload_returns_only_when_no_old_worker_accepts_connections(node, component):
    """A probe right after reload() must reach the new configuration: the old workers of a
    signalled master keep their listening sockets for a moment after the signal."""
    from rupost.deploy.backend import _children, _holds_socket, _tcp_listening_inodes

    backend = node.app.backend
    master = backend.pid(component)
    before = set(_children(master))
    backend.reload(component, node.app.components.process_spec(component))
    after = set(_children(master))
    listening = _tcp_listening_inodes()
    assert after - before, f"{component}: no worker started by the reload"
    assert not [pid for pid in before & after if _holds_socket(pid, listening)]
