"""The baseline: a bare postfix + dovecot configured by hand under a temporary directory.

No RuPost, no proxy hops, no database: postfix with flat-file hash maps built by
postmap (virtual domains, virtual mailboxes, a transport map), LMTP over a unix socket
into a dovecot that reads a passwd-file, Maildir storage. The same postfix also relays
the domain `sink.test` to an smtp-sink, the upper bound of what postfix can queue and
pass on over SMTP on this machine. Every daemon listens on free loopback ports and is
stopped (by its own stop command or by the pid this class started) at the end.
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import time
from pathlib import Path

from support.instance import free_ports

MASTER_CF = """\
{smtp_listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
syslog_name = postfix-bare
maillog_file = {d}/log/postfix.log
maillog_file_prefixes = {d}/log
queue_directory = {d}/spool
data_directory = {d}/data
myhostname = bare.bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no
append_dot_mydomain = no
mailbox_size_limit = 0
virtual_mailbox_domains = hash:{d}/etc/virtual_domains
virtual_mailbox_maps = hash:{d}/etc/virtual_mailboxes
virtual_transport = lmtp:unix:{d}/dovecot/run/lmtp
relay_domains = sink.test
transport_maps = hash:{d}/etc/transport
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = reject_unlisted_recipient
smtp_tls_security_level = none
"""

DOVECOT_CONF = """\
instance_name = rupost-bench-bare
base_dir = {d}/dovecot/run
state_dir = {d}/dovecot/state
log_path = {d}/log/dovecot.log
protocols = lmtp imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain
mail_uid = vmail
mail_gid = vmail
first_valid_uid = 1
mail_location = maildir:{d}/vmail/%d/%n/Maildir
mail_home = {d}/vmail/%d/%n
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%Lu {d}/etc/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%Lu {d}/etc/users
  default_fields = uid=vmail gid=vmail
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0600
    user = postfix
    group = postfix
  }}
}}
"""


def _run(argv: list[str], daemon: bool = False) -> str:
    """Run a command; `daemon`: it forks a daemon that keeps its stdio, so do not capture it
    through pipes (the read would wait for the daemon), use a file."""
    if daemon:
        import tempfile

        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                  timeout=120)
            err.seek(0)
            message = err.read().strip()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {message}")
        return ""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def wait_port(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
            time.sleep(0.1)


class BareStack:
    """postfix (hash maps) -> LMTP unix socket -> dovecot (passwd-file), plus an smtp-sink."""

    domain = "bare.test"
    sink_domain = "sink.test"

    def __init__(self, base: Path, users: list[str], password_hash: str, cert: Path, key: Path):
        self.d = Path(base)
        self.users = users  # local parts in bare.test
        self.password_hash = password_hash
        self.cert, self.key = cert, key
        self.smtp_port, self.imap_port, self.imaps_port, self.sink_port = free_ports(4)
        self._sink = None
        self._started = []

    # ------------------------------------------------------------------ set-up
    def start(self) -> "BareStack":
        d = self.d
        for sub in ("etc", "log", "spool", "data", "dovecot/run", "dovecot/state", "vmail", "tls", "sink"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        pf, vmail = pwd.getpwnam("postfix"), pwd.getpwnam("vmail")
        os.chown(d / "data", pf.pw_uid, pf.pw_gid)
        os.chown(d / "vmail", vmail.pw_uid, vmail.pw_gid)
        os.chown(d / "sink", pf.pw_uid, pf.pw_gid)
        # dovecot reads the key as root; copies keep the node's files untouched
        shutil.copy(self.cert, d / "tls/cert.pem")
        shutil.copy(self.key, d / "tls/key.pem")
        os.chmod(d / "tls/key.pem", 0o600)
        etc = d / "etc"
        (etc / "main.cf").write_text(MAIN_CF.format(d=d))
        (etc / "master.cf").write_text(MASTER_CF.format(smtp_listen=f"127.0.0.1:{self.smtp_port}"))
        (etc / "virtual_domains").write_text(f"{self.domain} OK\n")
        (etc / "virtual_mailboxes").write_text("".join(f"{u}@{self.domain} OK\n" for u in self.users))
        (etc / "transport").write_text(f"{self.sink_domain} smtp:[127.0.0.1]:{self.sink_port}\n")
        for table in ("virtual_domains", "virtual_mailboxes", "transport"):
            _run(["postmap", "-c", str(etc), f"hash:{etc / table}"])
        (etc / "users").write_text("".join(f"{u}@{self.domain}:{self.password_hash}::::::\n" for u in self.users))
        os.chown(etc / "users", 0, grp.getgrnam("dovecot").gr_gid)
        os.chmod(etc / "users", 0o640)
        (etc / "dovecot.conf").write_text(DOVECOT_CONF.format(
            d=d, cert=d / "tls/cert.pem", key=d / "tls/key.pem", imap_port=self.imap_port,
            imaps_port=self.imaps_port))
        _run(["doveconf", "-c", str(etc / "dovecot.conf"), "-n"])
        self._started.append("dovecot")
        _run(["dovecot", "-c", str(etc / "dovecot.conf")], daemon=True)
        _run(["postfix", "-c", str(etc), "check"])
        self._started.append("postfix")
        _run(["postfix", "-c", str(etc), "start"], daemon=True)
        # -u: smtp-sink drops to postfix after binding; -d: one file per message, so every
        # message that reached it can be counted
        self._sink = subprocess.Popen(
            ["smtp-sink", "-u", "postfix", "-d", f"{d}/sink/%H/", f"127.0.0.1:{self.sink_port}", "256"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for port in (self.smtp_port, self.imap_port, self.sink_port):
            wait_port(port)
        return self

    def stop(self) -> None:
        if self._sink is not None and self._sink.poll() is None:
            self._sink.terminate()
            try:
                self._sink.wait(10)
            except subprocess.TimeoutExpired:
                self._sink.kill()
        if "postfix" in self._started:
            subprocess.run(["postfix", "-c", str(self.d / "etc"), "stop"], capture_output=True, timeout=60)
        if "dovecot" in self._started:
            subprocess.run(["doveadm", "-c", str(self.d / "etc/dovecot.conf"), "stop"], capture_output=True,
                           timeout=60)
        self._started.clear()

    def pid(self, daemon: str) -> int:
        """The master process of the bare postfix or dovecot."""
        path = self.d / ("spool/pid/master.pid" if daemon == "postfix" else "dovecot/run/master.pid")
        return int(path.read_text().split()[0])

    # ---------------------------------------------------------------- counting
    def maildir(self, local: str) -> Path:
        return self.d / "vmail" / self.domain / local / "Maildir"

    def sink_count(self) -> int:
        return sum(1 for p in (self.d / "sink").rglob("*") if p.is_file())

    def queue_empty(self) -> bool:
        out = subprocess.run(["postqueue", "-c", str(self.d / "etc"), "-p"], capture_output=True, text=True,
                             timeout=60).stdout
        return "Mail queue is empty" in out
