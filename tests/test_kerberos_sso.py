"""Kerberos single sign-on against the real Samba AD DC (its KDC; tests/support/samba_ad.py,
tests/support/kerberos.py): `rupost ldap-domains kerberos` checks and takes the keytab an
administrator exported, dovecot offers GSSAPI on IMAP and (through postfix's SASL) on
submission, and real clients log in with a ticket from `kinit`, without a password: mutt
(IMAP, the mail address as authorization name), curl (IMAP, the bare principal) and msmtp
(submission). Refused: no ticket, a principal without a mailbox, a user disabled in AD
after the next sync; a keytab without a principal, of an old key version, or checked with a
skewed clock is refused by name and nothing changes.

Creates a network namespace: run under `flock /tmp/rupost-netns.lock`.
"""
from __future__ import annotations

import imaplib
import mailbox
import subprocess
import time
import uuid

import pytest

from mailclients import message, smtp, wait_for_subject
from rupost.ldap.client import DirectoryError
from support import kerberos as kt
from support import samba_ad as sa
from test_cli import cli
from test_directories import _deploy

# the name tests/test_samba_ad.py gives the same OU: a directory's mailboxes carry its name
# ('!directory:NAME'), and in one session the mailboxes one module's domain left are adopted
# by the next module's only under the same name
DOMAIN = "smbstaff"
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


@pytest.fixture(scope="module")
def krb(node, samba, tmp_path_factory):
    """LDAP domain smbstaff (OU=Staff) synced, the mail service account's keytab exported after
    a password change (kvno 2; the kvno-1 export kept for the refusal test), set up with the
    CLI and deployed. Off and removed at the end."""
    base = tmp_path_factory.mktemp("krb")
    (base / "ca.pem").write_text(samba.ca_pem)
    added = sa.STAFF_DOMAIN not in {d["name"] for d in node.app.domains.list()}
    if added:
        node.app.domains.add(sa.STAFF_DOMAIN)
    r = cli(node, "ldap-domains", "add", DOMAIN, "--type", "ad", "--uri", samba.ldaps_uri, "--base-dn", sa.STAFF_DN,
            "--bind-dn", sa.SERVICE_DN, "--bind-password-stdin", "--ca-file", str(base / "ca.pem"),
            "--mail-domain", sa.STAFF_DOMAIN, input=sa.SERVICE_PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    node.app.directories.sync(DOMAIN)
    host = node.mail_host
    principals = [f"imap/{host}", f"smtp/{host}", kt.MAIL_SERVICE]
    dn = kt.add_mail_service(samba, host, "Mail-Svc-Pass-1")
    old = kt.export_keytab(samba, base / "old.keytab", principals)
    kt.set_password(samba, dn, "Mail-Svc-Pass-2")
    keytab = kt.export_keytab(samba, base / "mail.keytab", principals)
    r = cli(node, "ldap-domains", "kerberos", DOMAIN, "--keytab", str(keytab))
    assert r.exit_code == 0, r.output
    assert f"imap/{host}@{sa.REALM} (kvno 2)" in r.output, r.output
    _deploy(node)
    client = kt.Client(samba, base / "client", host)
    yield {"client": client, "old": old, "keytab": keytab, "base": base, "principals": principals}
    assert cli(node, "ldap-domains", "kerberos", DOMAIN, "--off").exit_code == 0
    node.app.directories.remove(DOMAIN, force=True)
    if added:  # the node as this module found it: tests/test_samba_ad.py syncs the same OU afresh
        for alias in node.app.aliases.list(sa.STAFF_DOMAIN):
            node.app.aliases.remove(alias["address"])
        for mailbox in node.app.mailboxes.list(sa.STAFF_DOMAIN, limit=100_000):
            node.app.mailboxes.remove(mailbox["address"])
        node.app.domains.remove(sa.STAFF_DOMAIN)
    _deploy(node)


def _cert(node) -> str:
    return str(node.layout.current / "tls" / "mail.crt")


def curl_imap(node, krb, user: str):
    """curl lists the mailboxes with SASL GSSAPI (no authorization name: the principal's)."""
    url = f"imaps://{node.mail_host}:{node.ports['imaps']}/"
    return krb["client"].run(user, ["curl", "-sS", "--cacert", _cert(node), "--login-options", "AUTH=GSSAPI",
                                    "-u", f"{user}@{sa.REALM}:", url])


def msmtp_send(node, krb, user: str, sender: str, rcpt: str, subject: str):
    conf = krb["base"] / f"msmtprc-{user}"
    conf.write_text("\n".join([
        "defaults", "tls on", "tls_starttls off", f"tls_trust_file {_cert(node)}", "logfile -",
        "account rupost", f"host {node.mail_host}", f"port {node.ports['submissions']}", "auth gssapi",
        f"user {sender}", f"from {sender}", "account default : rupost", ""]))
    conf.chmod(0o600)
    return krb["client"].run(user, ["msmtp", "-C", str(conf), "-t"], input=message(sender, rcpt, subject).as_string())


def mutt_copy_inbox(node, krb, user: str, login: str):
    """mutt opens INBOX with GSSAPI (imap_authenticators) and copies every message to an
    mbox; no password is configured anywhere."""
    saved = krb["base"] / f"saved-{user}-{uuid.uuid4().hex[:6]}.mbox"
    conf = krb["base"] / f"muttrc-{user}"
    conf.write_text("\n".join([
        f'set folder="imaps://{login.replace("@", "%40")}@{node.mail_host}:{node.ports["imaps"]}/"',
        'set spoolfile="+INBOX"', "set ssl_force_tls=yes", 'set imap_authenticators="gssapi"',
        f'set certificate_file="{_cert(node)}"', "set confirmcreate=no", "set quit=yes", "set mbox_type=mbox", ""]))
    keys = f"<tag-pattern>~A<enter><tag-prefix><copy-message>{saved}<enter><quit>"
    done = krb["client"].run(user, ["script", "-qec", f"mutt -n -F {conf} -e 'push \"{keys}\"'", "/dev/null"],
                             stdin=subprocess.DEVNULL)
    return done, saved


def _add_user_without_mail(samba, login: str, password: str) -> str:
    dn = f"CN={login},{sa.STAFF_DN}"
    conn = samba.admin()
    try:
        assert conn.add(dn, "user", {"sAMAccountName": login, "unicodePwd": sa._unicode_pwd(password),
                                     "userAccountControl": "66048"}), conn.result
    finally:
        conn.unbind()
    return dn


# ----------------------------------------------------------------- the keytab
def test_keytab_refusals_name_the_problem_and_change_nothing(node, samba, krb, monkeypatch):
    before = node.app.directories.show(DOMAIN)["kerberos"]
    assert before["enabled"] and before["realm"] == sa.REALM and before["kvnos"] == {
        f"imap/{node.mail_host}@{sa.REALM}": 2, f"smtp/{node.mail_host}@{sa.REALM}": 2}
    only_imap = kt.export_keytab(samba, krb["base"] / "imap-only.keytab", [f"imap/{node.mail_host}", kt.MAIL_SERVICE])
    r = cli(node, "ldap-domains", "kerberos", DOMAIN, "--keytab", str(only_imap))
    assert r.exit_code != 0 and f"no key for smtp/{node.mail_host}@{sa.REALM}" in r.output, r.output
    # exported before the account's password changed: the DC's keys are version 2
    r = cli(node, "ldap-domains", "kerberos", DOMAIN, "--keytab", str(krb["old"]))
    assert r.exit_code != 0 and "(kvno 1)" in r.output and "password changed after the export" in r.output, r.output
    garbage = krb["base"] / "garbage.keytab"
    garbage.write_bytes(b"not a keytab\n")
    r = cli(node, "ldap-domains", "kerberos", DOMAIN, "--keytab", str(garbage))
    assert r.exit_code != 0 and "not a keytab" in r.output, r.output
    # this node's clock an hour ahead of the DC's (libfaketime, for the checking tools only)
    monkeypatch.setenv("LD_PRELOAD", FAKETIME)
    monkeypatch.setenv("FAKETIME", "+1h")
    with pytest.raises(DirectoryError, match="clocks of this node and the KDC differ"):
        node.app.directories.kerberos_set(DOMAIN, krb["keytab"].read_bytes())
    monkeypatch.delenv("LD_PRELOAD")
    assert node.app.directories.show(DOMAIN)["kerberos"] == before


# ----------------------------------------------------------------- logins with a ticket
def test_imap_and_submission_with_a_ticket_and_no_password(node, krb):
    alice = sa.STAFF["alice"]
    client = krb["client"]
    subject = f"sso {uuid.uuid4().hex[:8]}"
    with smtp(node.ports["smtp"]) as s:
        assert s.send_message(message("someone@example.org", alice.mail, subject)) == {}
    wait_for_subject(node.ports["imaps"], alice.mail, alice.password, subject)  # passwords keep working
    # no ticket yet: GSSAPI refused
    refused = curl_imap(node, krb, "alice")
    assert refused.returncode != 0, refused.stdout
    client.kinit("alice", alice.password)
    listed = curl_imap(node, krb, "alice")
    assert listed.returncode == 0 and "INBOX" in listed.stdout, listed.stderr
    done, saved = mutt_copy_inbox(node, krb, "alice", alice.mail)
    assert saved.exists(), done.stdout[-2000:] + done.stderr
    assert subject in {m["Subject"] for m in mailbox.mbox(str(saved))}
    sent_subject = f"sso-sent {uuid.uuid4().hex[:8]}"
    sent = msmtp_send(node, krb, "alice", alice.mail, sa.STAFF["carol"].mail, sent_subject)
    assert sent.returncode == 0, sent.stdout[-2000:] + sent.stderr
    # msmtp has no password to offer: postfix logged the GSSAPI login, mapped to the mailbox
    assert f"sasl_method=GSSAPI, sasl_username={alice.mail}" in (node.layout.logs / "postfix.log").read_text()
    raw = wait_for_subject(node.ports["imaps"], sa.STAFF["carol"].mail, sa.STAFF["carol"].password, sent_subject)
    assert f"From: {alice.mail}".encode() in raw


def test_a_principal_without_a_mailbox_is_refused(node, samba, krb):
    login = f"krbnm{uuid.uuid4().hex[:5]}"
    dn = _add_user_without_mail(samba, login, "Nomail-Pass-1")
    try:
        node.app.directories.sync(DOMAIN)
        krb["client"].kinit(login, "Nomail-Pass-1")  # a valid ticket of the realm
        assert curl_imap(node, krb, login).returncode != 0
        sent = msmtp_send(node, krb, login, f"{login}@{sa.STAFF_DOMAIN}", sa.STAFF["carol"].mail, "no mailbox")
        assert sent.returncode != 0 and "authentication failed" in (sent.stdout + sent.stderr).lower(), sent.stdout
    finally:
        samba.delete(dn)


def test_a_user_disabled_in_ad_is_refused_after_the_sync_ticket_or_not(node, samba, krb):
    bob = sa.STAFF["bob"]
    client = krb["client"]
    client.kinit("bob", bob.password)
    assert curl_imap(node, krb, "bob").returncode == 0
    samba.set_disabled(bob.dn, True)
    try:
        assert node.app.directories.sync(DOMAIN)["disabled"] == 1
        # the ticket from before is still valid for the KDC: RuPost refuses it all the same
        assert curl_imap(node, krb, "bob").returncode != 0
        sent = msmtp_send(node, krb, "bob", bob.mail, sa.STAFF["carol"].mail, "disabled")
        assert sent.returncode != 0, sent.stdout
    finally:
        samba.set_disabled(bob.dn, False)
        node.app.directories.sync(DOMAIN)
    assert curl_imap(node, krb, "bob").returncode == 0


def test_password_logins_keep_working_with_kerberos_on(node, krb):
    imap = imaplib.IMAP4_SSL("127.0.0.1", node.ports["imaps"])
    try:
        assert "AUTH=GSSAPI" in imap.capabilities, imap.capabilities
        imap.login(sa.STAFF["carol"].mail, sa.STAFF["carol"].password)
    finally:
        imap.shutdown()


def test_expired_and_wrong_tickets_refused_until_the_new_keytab(node, samba, krb):
    """Last: it changes the service account's keys (and sets the new keytab again)."""
    carol = sa.STAFF["carol"]
    client = krb["client"]
    client.kinit("carol", carol.password, lifetime="5s")
    time.sleep(6)  # the ticket's end
    assert curl_imap(node, krb, "carol").returncode != 0
    # the account's password changed on the DC (kvno 3): a fresh ticket is encrypted with a key
    # the deployed keytab lacks, until the administrator exports it again and it is set
    kt.set_password(samba, kt.MAIL_SERVICE_DN, "Mail-Svc-Pass-3")
    client.kinit("carol", carol.password)
    assert curl_imap(node, krb, "carol").returncode != 0
    keytab = kt.export_keytab(samba, krb["base"] / "kvno3.keytab", krb["principals"])
    r = cli(node, "ldap-domains", "kerberos", DOMAIN, "--keytab", str(keytab))
    assert r.exit_code == 0 and "(kvno 3)" in r.output, r.output
    _deploy(node)
    listed = curl_imap(node, krb, "carol")
    assert listed.returncode == 0, listed.stderr
