"""IMAP sessions: through the node's public IMAPS port vs directly to dovecot.

A session is: connect (TLS handshake where there is TLS), LOGIN, SELECT INBOX, FETCH
1:100 (BODY.PEEK[HEADER]), LOGOUT. `workers` client processes run `sessions` of them
in total, spread over the mailboxes; sessions/s and the per-session p50/p99 are reported.

Targets, all against the same mailboxes and the same mail storage:
- full:        client TLS -> HAProxy (public imaps, PROXY v2) -> nginx stream (TLS ends,
               PROXY v1) -> dovecot imap listener (haproxy = yes), node dovecot.
- direct_tls:  client TLS -> a second dovecot master started with the node's own
               dovecot.conf (`!include`d verbatim: same SQL passdb/userdb, same storage,
               same plugins) plus an `imaps` listener, so dovecot ends TLS itself; no hop.
- direct_plain: no TLS -> the node dovecot's `imap_internal` loopback listener (the one
               SOGo uses), no hop: what the TLS handshake and encryption cost.
- bare_tls:    client TLS -> the bare dovecot (passwd-file, no SQL) of the SMTP baseline.
"""
from __future__ import annotations

import imaplib
import multiprocessing
import shutil
import ssl
import statistics
import subprocess
import time
from pathlib import Path

from support.instance import free_ports

from .bare import _run, wait_port


_CONTEXT = None


def _tls() -> ssl.SSLContext:
    """One client context per process, without loading the system CA store (which costs
    tens of milliseconds of client CPU per session and would be measured as server time)."""
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _CONTEXT.check_hostname = False
        _CONTEXT.verify_mode = ssl.CERT_NONE
    return _CONTEXT


def one_session(args) -> float:
    port, tls, user, password, fetch = args
    t0 = time.perf_counter()
    imap = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=_tls(), timeout=30) if tls else \
        imaplib.IMAP4("127.0.0.1", port, timeout=30)
    try:
        imap.login(user, password)
        typ, data = imap.select("INBOX", readonly=True)
        if typ != "OK" or int(data[0]) < fetch:
            raise RuntimeError(f"{user}: INBOX has {data[0]!r} messages, {fetch} needed")
        typ, data = imap.fetch(f"1:{fetch}", "(BODY.PEEK[HEADER])")
        if typ != "OK" or sum(1 for d in data if isinstance(d, tuple)) != fetch:
            raise RuntimeError(f"{user}: FETCH returned {typ}")
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass
    return time.perf_counter() - t0


def run_sessions(pool, port: int, tls: bool, users: list[tuple[str, str]], sessions: int, fetch: int = 100) -> dict:
    jobs = [(port, tls, *users[i % len(users)], fetch) for i in range(sessions)]
    pool.map(one_session, jobs[: len(users)])  # warm: first logins, index files, TLS session setup
    t0 = time.perf_counter()
    times = pool.map(one_session, jobs, chunksize=1)
    elapsed = time.perf_counter() - t0
    times.sort()
    return {"sessions": sessions, "elapsed_s": round(elapsed, 3), "sessions_s": round(sessions / elapsed, 2),
            "p50_ms": round(statistics.median(times) * 1000, 1),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1000, 1)}


class DirectDovecot:
    """A second dovecot master on the node's own configuration, with an imaps listener."""

    def __init__(self, inst, base: Path):
        self.inst, self.d = inst, Path(base)
        self.port = free_ports(1)[0]
        self.conf = self.d / "dovecot.conf"

    def start(self) -> "DirectDovecot":
        node_conf = self.inst.layout.component_config("dovecot") / "dovecot.conf"
        for sub in ("run", "state"):
            (self.d / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""\
!include {node_conf}
instance_name = rupost-bench-direct
base_dir = {self.d}/run
state_dir = {self.d}/state
log_path = {self.d}/dovecot.log
protocols = imap
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imap_internal {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.port}
    ssl = yes
  }}
}}
service managesieve-login {{
  inet_listener sieve {{
    port = 0
  }}
  inet_listener sieve_internal {{
    port = 0
  }}
}}
""")
        _run(["dovecot", "-c", str(self.conf)], daemon=True)
        wait_port(self.port)
        return self

    def stop(self) -> None:
        subprocess.run(["doveadm", "-c", str(self.conf), "stop"], capture_output=True, timeout=60)


def measure(inst, users: list[tuple[str, str]], bare, bare_users, sessions: int, workers: int, rounds: int,
            workdir: Path) -> dict:
    direct = DirectDovecot(inst, workdir / "direct-dovecot")
    targets = {
        "full": (inst.ports["imaps"], True, users),
        "direct_tls": (direct.port, True, users),
        "direct_plain": (inst.ports["dovecot_imap_internal"], False, users),
        "bare_tls": (bare.imaps_port, True, bare_users),
    }
    results = {name: [] for name in targets}
    try:
        direct.start()
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for order in abba(list(targets), rounds):
                for name in order:
                    port, tls, who = targets[name]
                    results[name].append(run_sessions(pool, port, tls, who, sessions))
    finally:
        direct.stop()
        shutil.rmtree(workdir / "direct-dovecot", ignore_errors=True)
    out: dict = {}
    for name, runs in results.items():
        best = sorted(runs, key=lambda r: r["sessions_s"])[len(runs) // 2]  # the median run
        out[name] = {**best, "runs_sessions_s": [r["sessions_s"] for r in runs]}
    out["pair_ratios"] = {other: pair_ratios(results["full"], results[other])
                          for other in ("direct_tls", "direct_plain")}
    return out


def abba(names: list[str], rounds: int) -> list[list[str]]:
    """The targets' order per round, reversed every other round (A B B A ...): a machine
    that slows down or speeds up during the run weighs on every target alike."""
    return [names if i % 2 == 0 else names[::-1] for i in range(rounds)]


def pair_ratios(full: list[dict], baseline: list[dict]) -> dict:
    """The full path's rate over the baseline's, round by round (each pair measured side by
    side), and the median of those ratios: the figure a slow round cannot bend."""
    ratios = [round(f["sessions_s"] / b["sessions_s"], 3) for f, b in zip(full, baseline, strict=True)]
    return {"ratios": ratios, "median": round(statistics.median(ratios), 3)}
