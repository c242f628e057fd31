"""Directories against a real Samba AD DC (docs/directories.md): sync and login by bind.

    flock /tmp/rupost-netns.lock python3 -m benchmarks.samba_ad [--changes 500] [--samples 200] [--json FILE]

- sync: the DC of tests/support/samba_ad.py (1,500 users under OU=Bulk, in its own network
  namespace); the time of ``ldap-domains sync`` on the first run (1,500 mailboxes created), with
  nothing changed, and after ``--changes`` users changed their surname (GAL updates).
- login: p50/p99 of an IMAP ``LOGIN`` (the TLS session already open, dovecot's auth cache
  flushed before each, so every login reaches its passdb): a directory user (dovecot's LDAP
  passdb: a search as the service account and a bind as the user, over LDAPS to the DC) and a
  local mailbox (the SQL passdb), alternated one by one so the machine's noise hits both alike;
  reported also as the ratio of the two p50s.
- kerberos (``--kerberos``): the same staff domain with Kerberos single sign-on (the keytab of
  tests/support/kerberos.py's mail service account), p50/p99 of a whole IMAP session by curl
  (connect, TLS, log in, list mailboxes, log out; one process each) with ``AUTH=GSSAPI`` and
  the ticket of ``kinit`` against the same with the directory user's password (LDAP bind)
  and a local mailbox's (SQL), alternated, the auth cache flushed before each. The service
  ticket stays in the client's cache after the first login, as it does for a real client.
"""
from __future__ import annotations

import argparse
import imaplib
import json
import re
import ssl
import sys
import tempfile
import time
from pathlib import Path

from .common import node_instance, summary_ms


def _login_time(port: int, user: str, password: str, context: ssl.SSLContext) -> float:
    imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=context, timeout=30)
    try:
        started = time.perf_counter()
        imap.login(user, password)
        return time.perf_counter() - started
    finally:
        imap.logout()


def _sync_times(app, samba, sa, changes: int) -> dict:
    app.domains.add(sa.BULK_DOMAIN)
    app.directories.add("bench", "ad", [samba.ldaps_uri], sa.BULK_DN, sa.SERVICE_DN, sa.SERVICE_PASSWORD,
                        ca_pem=samba.ca_pem, mail_domains=[sa.BULK_DOMAIN])
    out = {}
    for label in ("first", "unchanged"):
        started = time.perf_counter()
        result = app.directories.sync("bench")
        out[label] = {"seconds": round(time.perf_counter() - started, 3), "created": result["created"],
                      "updated": result["updated"]}
    conn = samba.admin()
    for i in range(changes):
        conn.modify(f"CN=bulk{i:04d},{sa.BULK_DN}", {"sn": [("MODIFY_REPLACE", [f"Changed {i}"])]})
    conn.unbind()
    started = time.perf_counter()
    result = app.directories.sync("bench")
    out[f"after_{changes}_changes"] = {"seconds": round(time.perf_counter() - started, 3),
                                       "created": result["created"], "updated": result["updated"]}
    return out


def _curl_time(client, user: str, argv: list[str]) -> float:
    started = time.perf_counter()
    done = client.run(user, argv)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"curl failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def _kerberos_times(inst, samba, sa, local: tuple[str, str], samples: int) -> dict:
    """GSSAPI against password logins, each a whole curl IMAP session."""
    from rupost.services.cache import flush_dovecot_auth_cache
    from support import kerberos as kt

    app, host = inst.app, inst.mail_host
    base = Path(tempfile.mkdtemp(prefix="rpbkrb", dir="/tmp"))
    principals = [f"imap/{host}", f"smtp/{host}", kt.MAIL_SERVICE]
    kt.add_mail_service(samba, host, "Mail-Svc-Pass-1")
    app.directories.kerberos_set("staff", kt.export_keytab(samba, base / "mail.keytab", principals).read_bytes())
    inst.deploy()
    client = kt.Client(samba, base / "client", host)
    alice = sa.STAFF["alice"]
    client.kinit("alice", alice.password)
    url = f"imaps://{host}:{inst.ports['imaps']}/"
    common = ["curl", "-sS", "-k"]
    # the mechanism named for every case: given a user with '@' and a ticket in its cache,
    # curl would pick GSSAPI over PLAIN by itself
    cases = {"gssapi": common + ["--login-options", "AUTH=GSSAPI", "-u", f"alice@{sa.REALM}:", url],
             "directory_password": common + ["--login-options", "AUTH=PLAIN", "-u", f"{alice.mail}:{alice.password}",
                                             url],
             "local_password": common + ["--login-options", "AUTH=PLAIN", "-u", f"{local[0]}:{local[1]}", url]}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(samples):
        for label, argv in cases.items():
            flush_dovecot_auth_cache(app)
            times[label].append(_curl_time(client, "alice", argv))
    out = {k: summary_ms(v) for k, v in times.items()}
    # what dovecot says each case really used
    log = (inst.layout.logs / "dovecot.log").read_text()
    out["logins_by_method"] = {m: len(re.findall(rf"Login: user=<[^>]*>, method={m}\b", log))
                               for m in ("GSSAPI", "PLAIN")}
    out["gssapi_to_local_p50_ratio"] = round(out["gssapi"]["p50_ms"] / out["local_password"]["p50_ms"], 2)
    out["gssapi_to_directory_p50_ratio"] = round(out["gssapi"]["p50_ms"] / out["directory_password"]["p50_ms"], 2)
    return out


def run(changes: int = 500, samples: int = 200, kerberos: bool = False) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from rupost.services.cache import flush_dovecot_auth_cache
    from support import samba_ad as sa

    results: dict = {"samba": sa.samba_version(), "users": sa.BULK_USERS}
    with node_instance("sambaad") as (inst, _pg):
        samba = sa.SambaDC(Path(tempfile.mkdtemp(prefix="rpbsmb", dir="/tmp")) / "dc").setup()
        try:
            app = inst.app
            results["sync"] = _sync_times(app, samba, sa, changes)
            app.domains.add(sa.STAFF_DOMAIN)
            app.directories.add("staff", "ad", [samba.ldaps_uri], sa.STAFF_DN, sa.SERVICE_DN, sa.SERVICE_PASSWORD,
                                ca_pem=samba.ca_pem, mail_domains=[sa.STAFF_DOMAIN])
            app.directories.sync("staff")
            local_domain = "local.bench.test"
            app.domains.add(local_domain)
            app.mailboxes.add(f"local@{local_domain}", "Local-Pass-1")
            inst.deploy()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            port = inst.ports["imaps"]
            alice = sa.STAFF["alice"]
            cases = {"directory_bind": (alice.mail, alice.password), "local_sql": (f"local@{local_domain}",
                                                                                   "Local-Pass-1")}
            times: dict[str, list[float]] = {k: [] for k in cases}
            for _ in range(samples):
                for label, (user, password) in cases.items():
                    flush_dovecot_auth_cache(app)
                    times[label].append(_login_time(port, user, password, context))
            results["login"] = {k: summary_ms(v) for k, v in times.items()}
            results["login"]["bind_to_sql_p50_ratio"] = round(
                results["login"]["directory_bind"]["p50_ms"] / results["login"]["local_sql"]["p50_ms"], 2)
            if kerberos:
                results["kerberos"] = _kerberos_times(inst, samba, sa, cases["local_sql"], samples)
        finally:
            samba.destroy()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=500)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--kerberos", action="store_true", help="also GSSAPI against password logins")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    text = json.dumps(run(args.changes, args.samples, args.kerberos), indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
