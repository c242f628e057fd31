"""Every connection limit on a node, derived from the expected load in one place.

A template describes the load it must carry with three parameters (``max_imap_sessions``,
``max_smtp_sessions``, ``max_web_sessions``); ``derive_limits`` turns them into the value of
every limit on the path of a session (HAProxy, nginx, dovecot, postfix), offered to the
template as the context name ``limits`` (docs/templates.md, "Capacity"). ``check_chain``
then reads the *rendered* sections back and refuses a chain in which a daemon would hold
fewer sessions than HAProxy admits, whoever set the values (a custom template, an ``extra``
snippet cannot be read and is the administrator's own business).

The polite answer lives in HAProxy because it is the only hop that sees every session of a
listener: beyond ``max_sessions`` it sends the client to a refusal server (nginx, TLS where
the port speaks TLS) that answers ``* BYE [UNAVAILABLE]``, ``421 4.7.0`` or ``503`` and closes.
Every daemon behind it is sized *above* that, so its own limit (which closes silently or
queues: dovecot's process_limit, postfix's maxproc) is never what a client meets.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

# The parameters that describe the load, with the builtin template's defaults (a template
# that declares none of them gets no capacity chain check: it sizes its limits itself).
LOAD_PARAMETERS = ("max_imap_sessions", "max_smtp_sessions", "max_web_sessions")

# Which public listener carries which load (HAProxy listener name -> parameter).
LISTENER_LOAD = {
    "imaps": "max_imap_sessions",
    "smtp": "max_smtp_sessions",
    "submissions": "max_smtp_sessions",
    "https": "max_web_sessions",
    "http": "max_web_sessions",
    "sieve": "max_sieve_sessions",  # derived: see derive_limits
}


@dataclass(frozen=True)
class Limits:
    """The derived values (docs/templates.md has the table with the reasons)."""

    imap_sessions: int       # HAProxy admits this many IMAPS sessions, the next gets BYE
    smtp_sessions: int       # per SMTP listener (25, 465)
    web_sessions: int        # per web listener (80, 443)
    sieve_sessions: int      # ManageSieve (4190): a tenth of the IMAP sessions, at least 20
    refusal_slots: int       # connections a frontend accepts beyond its limit, to answer them
    haproxy_maxconn: int     # global: every public and cluster frontend full, plus checks
    nginx_worker_connections: int
    nginx_worker_rlimit_nofile: int
    dovecot_imap_sessions: int    # public IMAP sessions plus SOGo's (one per web session at most)
    imap_sessions_per_process: int  # dovecot imap client_limit; above 1, service_count 0
    dovecot_imap_processes: int   # imap process_limit: the sessions, that many a process
    dovecot_sieve_sessions: int
    dovecot_lmtp_processes: int
    dovecot_default_client_limit: int
    postfix_process_limit: int
    inotify_instances: int   # fs.inotify.max_user_instances: one a vmail process (IDLE watches)
    inotify_watches: int     # fs.inotify.max_user_watches: the directories and index each IDLE watches
    open_files: int          # RLIMIT_NOFILE the busiest daemon needs at full load
    sogo_workers: int        # SOGo's WOWorkersCount for the web sessions (parameter sogo_workers)
    hibernate_sessions_per_process: int  # dovecot imap-hibernate client_limit
    hibernate_processes: int  # dovecot imap-hibernate process_limit
    imap_processes_ready: int  # dovecot imap process_min_avail (hibernation on: sessions wake into them)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def refusal_slots(sessions: int) -> int:
    """Connections a full frontend still accepts in order to answer them: a tenth, at least 10."""
    return max(10, sessions // 10)


def derive_limits(parameters: Mapping[str, Any]) -> Limits:
    imap = int(parameters.get("max_imap_sessions", 2000))
    smtp = int(parameters.get("max_smtp_sessions", 200))
    web = int(parameters.get("max_web_sessions", 1000))
    sieve = max(20, imap // 10)
    listeners = {"imaps": imap, "smtp": smtp, "submissions": smtp, "https": web, "http": web, "sieve": sieve}
    frontends = sum(n + refusal_slots(n) for n in listeners.values())
    # nginx proxies IMAPS, submission and HTTPS (two connections each: client and upstream)
    # and serves the refusals; nginx does not balance connections evenly between its
    # workers, so each one is sized for the whole load
    nginx_connections = 2 * (imap + smtp + web) + sum(refusal_slots(n) for n in listeners.values()) + 512
    dovecot_imap = imap + web
    per_process = int(parameters.get("imap_sessions_per_process", 1))
    hibernating = int(parameters.get("imap_hibernate_after", 0)) > 0
    dovecot_sieve = sieve + 20
    lmtp = smtp + 20
    # every dovecot process holds a connection to log, stats and anvil, and every login
    # process one to auth: the imap processes, their login processes, LMTP and the rest
    default_client_limit = 2 * (dovecot_imap + dovecot_sieve) + lmtp + 200
    return Limits(
        imap_sessions=imap, smtp_sessions=smtp, web_sessions=web, sieve_sessions=sieve,
        refusal_slots=refusal_slots(imap),
        # every public frontend full, plus health checks and stats; the cluster frontends
        # (a peer's clients after a failover) share it: a node carrying a failed peer's
        # clients is beyond the load it was sized for, and HAProxy says so in its log
        haproxy_maxconn=frontends + 100,
        nginx_worker_connections=nginx_connections,
        # one descriptor a connection, plus logs and temporary files
        nginx_worker_rlimit_nofile=nginx_connections + 1024,
        dovecot_imap_sessions=dovecot_imap,
        imap_sessions_per_process=per_process,
        dovecot_imap_processes=-(-dovecot_imap // per_process),
        dovecot_sieve_sessions=dovecot_sieve,
        dovecot_lmtp_processes=lmtp,
        dovecot_default_client_limit=default_client_limit,
        # the smtpd of each listener, plus SOGo's and Sieve's own loopback smtpds
        postfix_process_limit=smtp + 20,
        # every imap process (and LMTP's) of the one vmail user holds an inotify instance
        # (a hibernated session holds one of its own: then one a session)
        inotify_instances=(dovecot_imap if hibernating else -(-dovecot_imap // per_process)) + lmtp + 128,
        # an IDLE session on Maildir watches new/, cur/ and the mailbox's index log: three,
        # one spare (a second mailbox selected by another client of the process)
        inotify_watches=WATCHES_PER_IMAP_SESSION * dovecot_imap + 8192,
        # HAProxy needs two descriptors a connection, an nginx worker its worker_rlimit_nofile,
        # a dovecot process with default_client_limit clients one each (log, stats, anvil)
        open_files=max(2 * (frontends + 100), nginx_connections + 1024, default_client_limit) + 1024,
        sogo_workers=sogo_workers_for(web),
        hibernate_sessions_per_process=HIBERNATE_SESSIONS_PER_PROCESS,
        hibernate_processes=-(-dovecot_imap // HIBERNATE_SESSIONS_PER_PROCESS),
        # woken sessions stay awake imap_hibernate_after seconds: room for a few dozen at once
        imap_processes_ready=-(-WAKING_SESSIONS // per_process) if hibernating else 0,
    )


WATCHES_PER_IMAP_SESSION = 4
# imap-hibernate holds two descriptors a session (the client and the inotify instance of its
# mailbox): 4,000 keep a process well inside any open-file limit the daemons get
HIBERNATE_SESSIONS_PER_PROCESS = 4000
# with hibernation, imap processes kept ready for this many sessions waking at once
WAKING_SESSIONS = 40
# A SOGo worker (sogod child) serves one HTTP request at a time and the web sessions are
# mostly idle keep-alive connections of webmail and CalDAV/CardDAV clients polling every
# minute or so: one worker for a hundred of them, at least SOGo's usual 3 and at most the
# sogo_workers parameter's bound (64; SxVMemLimit keeps each under 512 MiB). An assumption
# from the request pattern, not a measurement (docs/templates.md#capacity).
WEB_SESSIONS_PER_SOGO_WORKER = 100
SOGO_WORKERS_MIN, SOGO_WORKERS_MAX = 3, 64


def sogo_workers_for(web_sessions: int) -> int:
    return min(SOGO_WORKERS_MAX, max(SOGO_WORKERS_MIN, -(-web_sessions // WEB_SESSIONS_PER_SOGO_WORKER)))


# The load the package's kernel settings are sized for (debian: /usr/lib/sysctl.d/60-rupost.conf,
# from systemd/sysctl.d/60-rupost.conf): the guide's largest node, 20,000 users, each with two
# IMAP sessions (a desktop client and a phone), one in ten in webmail at once. A template that
# asks for more gets a warning from `rupost check` naming the sysctl to raise.
PACKAGE_KERNEL_LOAD = {"max_imap_sessions": 40000, "max_smtp_sessions": 400, "max_web_sessions": 2000,
                       "imap_sessions_per_process": 1}
# kernel settings `rupost check` compares with the derived limits: (sysctl, /proc path, Limits field)
KERNEL_SETTINGS = (("fs.inotify.max_user_instances", "/proc/sys/fs/inotify/max_user_instances", "inotify_instances"),
                   ("fs.inotify.max_user_watches", "/proc/sys/fs/inotify/max_user_watches", "inotify_watches"))


def listener_sessions(listener: str, limits: Limits) -> int:
    return {"imaps": limits.imap_sessions, "smtp": limits.smtp_sessions, "submissions": limits.smtp_sessions,
            "https": limits.web_sessions, "http": limits.web_sessions,
            "sieve": limits.sieve_sessions}[listener]


# ------------------------------------------------------------------ the chain check
def declares_load(parameter_specs: Mapping[str, Any]) -> bool:
    return all(name in parameter_specs for name in LOAD_PARAMETERS)


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# dovecot 2.3's defaults, for a service a template does not configure
DOVECOT_DEFAULTS = {"default_process_limit": 100, "default_client_limit": 1000,
                    "imap.process_limit": 1024, "imap.client_limit": 1}  # doveconf -d, dovecot 2.3


def _dovecot_limit(settings: Mapping[str, Any], service: str, key: str) -> tuple[int, str]:
    """(value, key path) of a dovecot service limit as the rendered section sets it, else
    the default dovecot applies."""
    section = settings.get(f"service {service}") or {}
    path = f"components.dovecot.settings.service {service}.{key}"
    if key in section:
        return _int(section[key], 0), path
    default = DOVECOT_DEFAULTS.get(f"{service}.{key}")
    if default is not None:
        return default, f"{path} (dovecot's default)"
    top = f"default_{key}"
    if top in settings:
        return _int(settings[top], 0), f"components.dovecot.settings.{top}"
    return DOVECOT_DEFAULTS[top], f"components.dovecot.settings.{top} (dovecot's default)"


class _Problems(list):
    """The chain's problems, each naming both values."""

    def at_least(self, value: int, value_path: str, needed: int, needed_what: str, consequence: str) -> None:
        if value < needed:
            self.append(f"{value_path} = {value} is below {needed_what} = {needed}: {consequence}")


Admitted = dict[str, tuple[int, str]]  # HAProxy listener -> (max_sessions, its path)


def check_chain(parameters: Mapping[str, Any], models: Mapping[str, Any]) -> list[str]:
    """Problems in the chain of limits of the rendered sections, each naming both values."""
    problems = _Problems()
    admitted = _check_haproxy(models.get("haproxy") or {}, derive_limits(parameters), problems)
    if "imaps" in admitted:
        _check_dovecot((models.get("dovecot") or {}).get("settings") or {}, admitted["imaps"], problems)
    _check_nginx(models.get("nginx") or {}, admitted, problems)
    _check_postfix(models.get("postfix") or {}, admitted, problems)
    return list(problems)


def _check_haproxy(haproxy: Mapping[str, Any], wanted: Limits, problems: _Problems) -> Admitted:
    admitted: Admitted = {}
    frontends = 0
    for index, listener in enumerate(haproxy.get("listeners", [])):
        name = listener.get("name")
        path = f"components.haproxy.listeners[{index}].max_sessions"
        if name not in LISTENER_LOAD:
            continue
        if "max_sessions" not in listener:
            problems.append(f"{path}: missing: the {name} listener must admit a bounded number of sessions "
                            f"and answer the next ones (parameters.{LISTENER_LOAD[name]})")
            continue
        sessions = _int(listener["max_sessions"], 0)
        expected = listener_sessions(name, wanted)
        if sessions < expected:
            problems.append(f"{path} = {sessions} is below the {expected} sessions the parameters ask for "
                            f"(parameters.{LISTENER_LOAD[name]}): clients would be refused before the "
                            "expected load")
        admitted[name] = (sessions, path)
        frontends += sessions + refusal_slots(sessions)
    maxconn = _int(haproxy.get("maxconn", 8000), 8000)
    if frontends and maxconn < frontends:
        problems.append(f"components.haproxy.maxconn = {maxconn} is below the {frontends} connections its "
                        "public frontends admit (components.haproxy.listeners[*].max_sessions, with the slots "
                        "to answer refused clients)")
    return admitted


def _check_dovecot(dovecot: Mapping[str, Any], imaps: tuple[int, str], problems: _Problems) -> None:
    sessions, path = imaps
    processes, p_path = _dovecot_limit(dovecot, "imap", "process_limit")
    per_process, _ = _dovecot_limit(dovecot, "imap", "client_limit")
    if str((dovecot.get("service imap") or {}).get("service_count", 1)) == "1":
        # dovecot's default service_count 1: a process serves one client in its life, so
        # client_limit packs nothing (measured: process_limit 400 with client_limit 10 held
        # 400 sessions, the next 100 were closed during LOGIN; docs/benchmarks.md)
        per_process = 1
    problems.at_least(processes * per_process,
                      p_path + (f" x client_limit {per_process}" if per_process > 1 else ""),
                      sessions, path, "dovecot would drop IMAP sessions HAProxy admits, silently")
    logins, l_path = _dovecot_limit(dovecot, "imap-login", "process_limit")
    login = dovecot.get("service imap-login") or {}
    if str(login.get("service_count", 1)) == "0":  # high-performance mode: many clients a process
        login_clients, _ = _dovecot_limit(dovecot, "imap-login", "client_limit")
        logins *= login_clients
    problems.at_least(logins, l_path, sessions, path, "logins beyond it would wait for a login process")
    for service in ("stats", "anvil", "log"):
        clients, s_path = _dovecot_limit(dovecot, service, "client_limit")
        problems.at_least(clients, s_path, 2 * sessions, f"2 x {path}",
                          f"every imap process and its login process connect to {service} "
                          f"(issue 25: 'service({service}): client_limit reached' lost logins)")


def _check_nginx(nginx: Mapping[str, Any], admitted: Admitted, problems: _Problems) -> None:
    proxied = sum(admitted.get(n, (0, ""))[0] for n in ("imaps", "submissions", "https"))
    if not proxied:
        return
    connections = _int(nginx.get("worker_connections", 4096), 4096)
    problems.at_least(connections, "components.nginx.worker_connections", 2 * proxied,
                      "2 x the imaps, submissions and https listeners' max_sessions",
                      "nginx would log 'worker_connections are not enough' and drop sessions")
    nofile = nginx.get("worker_rlimit_nofile")
    if nofile is not None:
        problems.at_least(_int(nofile, 0), "components.nginx.worker_rlimit_nofile", connections,
                          "components.nginx.worker_connections", "a worker would run out of file descriptors")


def _check_postfix(postfix: Mapping[str, Any], admitted: Admitted, problems: _Problems) -> None:
    smtp_sessions, submissions = admitted.get("smtp", (0, ""))[0], admitted.get("submissions", (0, ""))[0]
    smtp = max(smtp_sessions, submissions)
    if not smtp:
        return
    which = "smtp" if smtp_sessions >= submissions else "submissions"
    default_limit = _int((postfix.get("main") or {}).get("default_process_limit", 100), 100)
    limits_seen: set[str] = set()
    for index, service in enumerate(postfix.get("master") or []):
        if service.get("command") != "smtpd" or service.get("enabled") in (False, "false", "no"):
            continue
        maxproc = str(service.get("maxproc", "-"))
        if maxproc == "-":
            value, path = default_limit, "components.postfix.main.default_process_limit"
        elif maxproc == "0":
            continue  # unlimited
        else:
            value, path = _int(maxproc, 0), f"components.postfix.master[{index}].maxproc"
        if path not in limits_seen:
            limits_seen.add(path)
            problems.at_least(value, path, smtp, admitted[which][1],
                              "postfix would leave SMTP clients HAProxy admits waiting without a greeting")
