"""Real lookups through the daemons' own paths: are postfix's and dovecot's database lookups
answering right now?

A ping of PostgreSQL says little about mail: after a database restart postfix's proxymap
holds its connections as dead for its own retry interval and dovecot's auth workers reconnect
on their own back-off, while the database itself answers at once (issue 32: 62 s of 451 to
known recipients with every check ok). These probes ask what a message or a login asks, the
way the daemons ask it: every `proxy:pgsql` table of the live postfix configuration through
proxymap (``postmap -q``), and dovecot's userdb through its auth service (``doveadm user``),
each with a key no cache holds (an address under the reserved ``.invalid`` domain, RFC 2606),
so the answer comes from PostgreSQL. "Not found" is an answer; only a lookup error is a
problem. Used by ``rupost check`` (check ``lookup``) and by the lookup cache guard when the
database comes back (``revive_lookups``), before it empties memcached and before the agent
retries the mail deferred during the outage.
"""
from __future__ import annotations

import subprocess
import time
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from . import Runtime, Services

PROBE_DOMAIN = "rupost.invalid"
TIMEOUT = 5.0  # per tool: a lookup slower than this is failing mail and logins in practice
# revive_lookups(): how long dovecot's userdb may take before dovecot is reloaded. Measured
# with 1.5 s: logins of uncached accounts came back about 5 s sooner after an outage, but an
# HA switchover run then delivered a message twice, most likely a needless reload (the probe
# ran out of patience under load) ending an old LMTP process mid-delivery; a stuck auth
# process does not answer within 5 s either
REVIVE_PROBE_TIMEOUT = TIMEOUT


def _probe_key() -> str:
    return f"lookup-probe-{uuid.uuid4().hex[:10]}@{PROBE_DOMAIN}"


def postfix_tables(conf: Path) -> list[str]:
    """The proxy:pgsql tables proxymap serves in the live configuration (proxy_read_maps
    names every table main.cf or a master.cf override uses, adapters/postfix.py)."""
    out = subprocess.run(["postconf", "-c", str(conf), "-h", "proxy_read_maps"], capture_output=True, text=True,
                         timeout=TIMEOUT, check=True).stdout
    return sorted({t for t in out.replace(",", " ").split() if t.startswith("proxy:pgsql:")})


def postfix_problems(app: Services | Runtime) -> list[str]:
    """One line per table whose lookup through proxymap failed. The tables are asked side by
    side: a failing one makes proxymap wait about a second."""
    conf = app.layout.component_config("postfix")
    if not (conf / "main.cf").exists():
        return []
    try:
        tables = postfix_tables(conf)
    except (OSError, subprocess.SubprocessError) as exc:
        return [f"postconf: {exc}"]
    key = _probe_key()
    running = [(t, subprocess.Popen(["postmap", "-c", str(conf), "-q", key, t], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)) for t in tables]
    problems = []
    for table, proc in running:
        try:
            _, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            problems.append(f"{table.rsplit('/', 1)[-1]}: no answer within {TIMEOUT:.0f} s")
            continue
        # exit 0 found, 1 not found; an error is a fatal message on stderr (postmap exits 1 too)
        failure = [line for line in err.splitlines() if "fatal:" in line]
        if proc.returncode not in (0, 1) or failure:
            detail = (failure[0].split("fatal: ", 1)[-1] if failure else f"exit code {proc.returncode}")
            problems.append(f"{table.rsplit('/', 1)[-1]}: {detail.strip()[:200]}")
    return problems


def dovecot_problems(app: Services | Runtime, timeout: float = TIMEOUT) -> list[str]:
    """dovecot's userdb asked through its auth service (what LMTP asks for every delivery and
    IMAP after every login): exit 0 found, 67 not found, 75 the lookup failed."""
    conf = app.layout.current / "dovecot" / "dovecot.conf"
    if not conf.exists():
        return []
    try:
        done = subprocess.run(["doveadm", "-c", str(conf), "user", _probe_key()], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return [f"dovecot userdb: no answer within {timeout:g} s"]
    except OSError as exc:
        return [f"doveadm: {exc}"]
    if done.returncode in (0, 67):
        return []
    errors = [line for line in done.stderr.splitlines() if line.strip()]
    return [f"dovecot userdb: {errors[-1].strip()[:200] if errors else f'exit code {done.returncode}'}"]


def lookup_problems(app: Services | Runtime) -> list[str]:
    return postfix_problems(app) + dovecot_problems(app)


def wait_for_lookups(app: Services | Runtime, patience: float, interval: float = 0.5) -> list[str]:
    """Probe until every lookup answers or `patience` seconds have passed; the problems of the
    last round (none: every lookup answers)."""
    deadline = time.monotonic() + patience
    while True:
        problems = lookup_problems(app)
        if not problems or time.monotonic() >= deadline:
            return problems
        time.sleep(interval)


def revive_lookups(app: Services | Runtime, patience: float) -> list[str]:
    """The database is back after an outage: make the daemons' lookups answer again, and wait
    (bounded) until they do. postfix's PostgreSQL client holds a server it failed to reach as
    dead for 60 s, hard-coded (dict_pgsql.c; pgsql_table(5) has no setting for it), in each
    proxymap process: measured, every uncached lookup failed for that whole minute after a
    restart and answered right after a `postfix reload`, which replaces the proxymap processes
    (gracefully: sessions in progress finish on the old processes). dovecot's SQL pool
    (lib-sql's sqlpool, 2.3) holds a connection whose connect failed as dead behind a timer
    that grows fivefold at each failure (1, 5, 25 s...) and is not cut short when the server
    comes back; it escapes every key with its first connection, and while that one waits out
    its timer every key fails to escape ("Could not escape string: Not connected to
    database") and the login or delivery fails. Measured: an account dovecot had not cached
    logged in 14 to 20 s after a 10 s outage ended, still later after a longer one; dovecot
    has no setting for the timer. lookup_key() turns such a query into an error (tempfail,
    not "user unknown", data migration 0010). The stuck processes are ended (auth, the ACL
    dict, and LMTP, whose idle connection to the old auth process would fail its next
    delivery: adapters.dovecot.end_database_processes) and the master starts new ones that
    connect at once; then postfix is reloaded, which also drops the LMTP connections it
    cached to the ended processes. Not a dovecot reload: dovecot 2.3 ends idle IMAP sessions
    when its master reloads ("Server shutting down."), and sessions must outlive a database
    switchover. The problems left when patience runs out
    (none: every lookup answers)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..errors import RuPostError

    # both asked side by side: a userdb lookup that does not answer is one queued behind
    # lib-sql's reconnect back-off
    with ThreadPoolExecutor(2) as pool:
        dovecot = pool.submit(dovecot_problems, app, REVIVE_PROBE_TIMEOUT)
        postfix = pool.submit(postfix_problems, app)
        dovecot_failing, postfix_failing = bool(dovecot.result()), bool(postfix.result())
    try:
        if dovecot_failing:
            _end_dovecot_database_processes(app)
        # after dovecot's: postfix's reload also drops the LMTP connections it cached to them
        if dovecot_failing or postfix_failing:
            app.component_runtime.reload("postfix")
    except (RuPostError, OSError, subprocess.SubprocessError) as exc:
        return [f"{'dovecot' if dovecot_failing else 'postfix'} revival: {exc}"]
    return wait_for_lookups(app, patience)


def _end_dovecot_database_processes(app: Services | Runtime) -> None:
    """New auth, dict and LMTP processes (adapters.dovecot.end_database_processes), else a
    reload: with no master pid known, or no auth process to end (the master holds the service
    back after auth processes crashed at their start while the database was away, docs/
    database-ha.md; a reload starts the service anew)."""
    from adapters.dovecot import end_database_processes

    runtime = app.component_runtime
    master = runtime.backend.pid("dovecot")
    if master is None or "auth" not in end_database_processes(master):
        runtime.reload("dovecot")
