"""Impersonation accounts against the real dovecot (master passdb), the policy server
and rupost_logs: the account opens mailboxes of its domains only, with its own
password, and every use is recorded."""
from __future__ import annotations

import imaplib
import random
import smtplib
import uuid

import pytest

from mailclients import IMAPSFrom, message, smtp, smtps, wait_for_subject
from rupost.errors import ConflictError, NotFoundError, ValidationError
from rupost.services.impersonation import ImpersonationService


def _refused(node, user, password):
    """A login that must fail, from its own loopback address: dovecot's auth penalty
    (per client address) would otherwise slow each next failure down."""
    source = f"127.0.{random.randint(64, 250)}.{random.randint(2, 250)}"
    with pytest.raises(imaplib.IMAP4.error, match="AUTH(ENTICATION|ORIZATION)FAILED"):
        _login(node, user, password, source)


@pytest.fixture
def other_domain(node):
    name = f"o{uuid.uuid4().hex[:10]}.test"
    node.app.domains.add(name)
    return name


def _make_live(node):
    """The master passdb and the post-login hook are rendered only while an account exists:
    the first account asks for a deploy."""
    if node.app.impersonation.deploy_hint():
        assert node.app.deploys.deploy(node.app.deploys.plan(node.parameters)).result == "applied"
    assert node.app.impersonation.live_on_this_node() and node.app.impersonation.deploy_hint() == ""


def _login(node, user, password, source="127.0.0.1"):
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"], source)
    try:
        imap.login(user, password)
    except imaplib.IMAP4.error:
        try:
            imap.shutdown()
        except OSError:
            pass
        raise
    return imap


def test_impersonation_opens_listed_domains_only_and_records_each_use(node, domain, other_domain, mailbox):
    service = ImpersonationService(node.app)
    account = f"svc{uuid.uuid4().hex[:6]}"
    secret = f"Svc-{uuid.uuid4().hex}"
    created = service.add(account, secret, [domain], description="migration")
    assert created["domains"] == [domain]
    _make_live(node)
    target, target_pw = mailbox("target")
    subject = f"for the target {uuid.uuid4().hex}"
    with smtp(node.ports["smtp"]) as client:
        assert client.send_message(message("someone@example.org", target, subject)) == {}
    wait_for_subject(node.ports["imaps"], target, target_pw, subject)

    # the account's password opens the target's INBOX
    imap = _login(node, service.login(target, account), secret)
    try:
        typ, data = imap.select("INBOX")
        assert typ == "OK"
        _, found = imap.search(None, "SUBJECT", f'"{subject}"')
        assert found[0].split(), "the impersonated INBOX is the target's"
    finally:
        imap.logout()
    uses = service.uses(account)
    assert len(uses) == 1 and uses[0]["target"] == target and uses[0]["protocol"] == "imap"
    assert uses[0]["remote_ip"] == "127.0.0.1" and uses[0]["node"] == node.config.node_name
    assert uses[0]["mechanism"] == "PLAIN"

    # SASL PLAIN with an authorization id (how `rupost migrate --master-user` logs in to a
    # source server) is the same master login: a RuPost node can be a migration source
    imap = IMAPSFrom("127.0.0.1", node.ports["imaps"])
    try:
        typ, _ = imap.authenticate("PLAIN", lambda _: f"{target}\0{account}\0{secret}".encode())
        assert typ == "OK" and imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()
    assert len(service.uses(account)) == 2 and service.uses(account)[0]["target"] == target

    # wrong password, target in a domain not listed, target that does not exist: refused, not recorded
    _refused(node, service.login(target, account), secret + "x")
    outside, _ = f"user@{other_domain}", node.app.mailboxes.add(f"user@{other_domain}", f"pw-{uuid.uuid4().hex}")
    _refused(node, service.login(outside, account), secret)
    _refused(node, service.login(f"nobody@{domain}", account), secret)
    # the account cannot log in as itself, nor with the target's own password
    _refused(node, account, secret)
    _refused(node, service.login(target, account), target_pw)
    assert len(service.uses(account)) == 2
    # IMAP only: submission refuses the master login (an account cannot send as the user)
    with smtps(node.ports["submissions"]) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(service.login(target, account), secret)
    # the target's own login is not an impersonation
    _login(node, target, target_pw).logout()
    assert len(service.uses(account)) == 2

    # the other domain is added: now it opens; disabled: refused
    service.set(account, domains=[domain, other_domain])
    _login(node, service.login(outside, account), secret).logout()
    assert [u["target"] for u in service.uses(account)][0] == outside
    service.set(account, enabled=False)
    _refused(node, service.login(target, account), secret)
    listed = {a["name"]: a for a in service.list()}[account]
    assert listed["uses"] == 3 and listed["enabled"] is False
    service.remove(account)
    assert account not in {a["name"] for a in service.list()}


def test_impersonation_input_errors(node, domain):
    service = ImpersonationService(node.app)
    for bad, why in [("Bad Name", "invalid impersonation account name"), ("a*b", "invalid"), ("", "invalid")]:
        with pytest.raises(ValidationError, match=why):
            service.add(bad, "long-enough-pw", [domain])
    with pytest.raises(ValidationError, match="at least one mail domain"):
        service.add("svc-nodomain", "long-enough-pw", [])
    with pytest.raises(NotFoundError, match="does not exist"):
        service.add("svc-baddomain", "long-enough-pw", ["missing.example"])
    with pytest.raises(ValidationError, match="too short"):
        service.add("svc-short", "short", [domain])
    name = f"svc{uuid.uuid4().hex[:6]}"
    service.add(name, "long-enough-pw", [domain])
    with pytest.raises(ConflictError):
        service.add(name, "long-enough-pw", [domain])
    with pytest.raises(NotFoundError):
        service.remove("svc-missing")
    service.remove(name)
    assert all(a["name"] not in ("svc-nodomain", "svc-baddomain", "svc-short") for a in service.list())


def test_postlogin_script_refuses_the_session_when_the_use_cannot_be_recorded(node, domain, tmp_path):
    """The rendered script: an ordinary login goes straight on; an impersonated one goes
    on only once the policy server has recorded it."""
    import os
    import subprocess

    ImpersonationService(node.app).add(f"hook{uuid.uuid4().hex[:6]}", "hook-secret-123", [domain])
    _make_live(node)

    script = node.layout.current / "dovecot" / "postlogin.sh"
    marker = tmp_path / "started"
    session = ["sh", "-c", f"touch {marker}"]
    env = {"PATH": os.environ["PATH"], "USER": "u@example.test", "IP": "127.0.0.1"}
    assert subprocess.run([str(script), *session], env=env, timeout=30).returncode == 0 and marker.exists()
    marker.unlink()
    # impersonated, the policy server unreachable (a copy of the script pointing at a closed port)
    broken = tmp_path / "postlogin.sh"
    text = script.read_text()
    assert f"127.0.0.1:{node.ports['auth_policy']}/impersonation" in text
    broken.write_text(text.replace(f":{node.ports['auth_policy']}/", ":9/"))
    broken.chmod(0o755)
    out = subprocess.run([str(broken), *session], env={**env, "MASTER_USER": "svc"}, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode != 0 and not marker.exists() and "could not be recorded" in out.stdout


def test_cli(node, domain, mailbox):
    from click.testing import CliRunner

    from rupost.cli import main

    target, _ = mailbox("cli")
    runner = CliRunner()
    root = ["--root", str(node.root)]
    name = f"cli{uuid.uuid4().hex[:6]}"
    r = runner.invoke(main, root + ["impersonation", "add", name, "--domain", domain, "--password-stdin"],
                      input="cli-secret-123\n")
    assert r.exit_code == 0 and f"USER@DOMAIN*{name}" in r.output, r.output
    _make_live(node)
    r = runner.invoke(main, root + ["impersonation", "add", name, "--domain", domain, "--password-stdin"],
                      input="cli-secret-123\n")
    assert r.exit_code == 1 and "already exists" in r.output
    _login(node, f"{target}*{name}", "cli-secret-123").logout()
    r = runner.invoke(main, root + ["impersonation", "uses", name])
    assert r.exit_code == 0 and target in r.output
    r = runner.invoke(main, root + ["impersonation", "list", "--json"])
    assert r.exit_code == 0 and name in r.output
    r = runner.invoke(main, root + ["impersonation", "remove", name])
    assert r.exit_code == 0


def test_the_hook_and_master_passdb_are_rendered_only_while_an_account_exists(node, domain):
    from click.testing import CliRunner

    from rupost.cli import main

    service = ImpersonationService(node.app)
    for account in service.list():
        service.remove(account["name"])
    node.app.deploys.deploy(node.app.deploys.plan(node.parameters))
    conf = (node.layout.current / "dovecot" / "dovecot.conf").read_text()
    assert "master = yes" not in conf and "rupost-postlogin" not in conf and not service.live_on_this_node()
    runner = CliRunner()
    root = ["--root", str(node.root)]
    r = runner.invoke(main, root + ["impersonation", "add", "lonely", "--domain", domain, "--password-stdin"],
                      input="lonely-secret-123\n")
    assert r.exit_code == 0 and "run `rupost deploy`" in r.output
    _make_live(node)
    assert "master = yes" in (node.layout.current / "dovecot" / "dovecot.conf").read_text()
    r = runner.invoke(main, root + ["impersonation", "remove", "lonely"])
    assert r.exit_code == 0 and "`rupost deploy` removes it" in r.output
