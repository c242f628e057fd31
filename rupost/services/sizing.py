"""`rupost sizing`: the load parameters for a number of mailboxes, the limits they give and the
memory to expect; `apply` stores them through the template parameter service.

The memory figure is measured, not guessed: benchmarks/capacity.py (suite section
held_imap_sessions) holds N IMAPS sessions (LOGIN, SELECT, IDLE) through port 993 and divides
the growth of the node's summed PSS (dovecot, nginx, HAProxy, postfix, PostgreSQL) by the
sessions held (docs/benchmarks.md, "Held IMAPS sessions").
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from ..templating.limits import LOAD_PARAMETERS, derive_limits

if TYPE_CHECKING:
    from . import Services

# measured: 300 held sessions, 889 KiB of PSS each (one imap process per session, dovecot's
# default client_limit 1; docs/benchmarks.md); rounded up
SESSION_MEMORY_KIB = 900
# measured with ten sessions a process (imap_sessions_per_process 10): 438 KiB; used for any
# value above 1 (fewer sessions a process cost between the two)
PACKED_SESSION_MEMORY_KIB = 450
# measured with hibernation on (imap_hibernate_after 5, ten sessions a process, 1,000 sessions
# held 100 s): 51 KiB a session once idling sessions have moved to imap-hibernate (nginx's TLS
# 41, HAProxy 3, dovecot 7); rounded up
HIBERNATED_SESSION_MEMORY_KIB = 60
# with hibernation, the share of sessions counted as active (in an imap process) at once
ACTIVE_SHARE = 0.1
# the node with no session: the daemons, PostgreSQL, SOGo's workers are counted apart
BASE_MEMORY_MIB = 150
SOGO_WORKER_MIB = 100  # SxVMemLimit bounds a worker at 512 MiB; ~100 MiB is a worker in use
# guide §2.6: memcached holds 512 KiB per LDAP domain + 10 KiB per user
MEMCACHED_KIB_PER_USER = 10
MEMCACHED_KIB_PER_LDAP_DOMAIN = 512
MEMCACHED_MIN_MB = 16


def memcached_mb(mailboxes: int, ldap_domains: int) -> int:
    kib = MEMCACHED_KIB_PER_LDAP_DOMAIN * ldap_domains + MEMCACHED_KIB_PER_USER * mailboxes
    return max(MEMCACHED_MIN_MB, math.ceil(kib / 1024))


def load_for(mailboxes: int, sessions_per_user: float) -> dict[str, int]:
    """The load parameters for this many mailboxes: every user's clients holding
    `sessions_per_user` IMAP sessions at once (a desktop client and a phone: 2), one user in
    fifty sending at the same moment, one in ten in webmail or syncing calendars."""
    return {"max_imap_sessions": max(20, math.ceil(mailboxes * sessions_per_user)),
            "max_smtp_sessions": max(20, math.ceil(mailboxes / 50)),
            "max_web_sessions": max(50, math.ceil(mailboxes / 10))}


def session_memory_kib(per_process: int, hibernate_after: int) -> int:
    """KiB a held IMAP session costs the node: in its imap process (alone or packed), or, with
    hibernation, idling in imap-hibernate with a tenth of them counted as active at once."""
    active = SESSION_MEMORY_KIB if per_process == 1 else PACKED_SESSION_MEMORY_KIB
    if hibernate_after <= 0:
        return active
    return math.ceil(ACTIVE_SHARE * active + (1 - ACTIVE_SHARE) * HIBERNATED_SESSION_MEMORY_KIB)


class SizingService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def estimate(self, mailboxes: int, sessions_per_user: float = 1.0,
                 ldap_domains: int | None = None) -> dict[str, Any]:
        if mailboxes < 1:
            raise ValidationError(f"--mailboxes: {mailboxes} is not a number of mailboxes (1 or more)")
        if not 0 < sessions_per_user <= 20:
            raise ValidationError(f"--sessions-per-user: {sessions_per_user} is outside 0 < K <= 20")
        if ldap_domains is None:
            ldap_domains = len(self.app.directories.list())
        current = {p["name"]: p["value"] for p in self.app.templates.parameters()}
        per_process = int(current.get("imap_sessions_per_process", 1))
        load = load_for(mailboxes, sessions_per_user)
        limits = derive_limits({**load, "imap_sessions_per_process": per_process})
        # SOGo's workers follow the web sessions, memcached the guide's formula (§2.6)
        parameters: dict[str, int] = {**load, "sogo_workers": limits.sogo_workers,
                                      "memcached_memory_mb": memcached_mb(mailboxes, ldap_domains)}
        hibernate_after = int(current.get("imap_hibernate_after", 0))
        session_kib = session_memory_kib(per_process, hibernate_after)
        session_mib = limits.dovecot_imap_sessions * session_kib / 1024
        memory = {"sessions_mib": round(session_mib), "memcached_mib": parameters["memcached_memory_mb"],
                  "sogo_mib": parameters["sogo_workers"] * SOGO_WORKER_MIB, "base_mib": BASE_MEMORY_MIB}
        memory["total_mib"] = sum(memory.values())
        if hibernate_after <= 0:  # what hibernating idle sessions would save
            memory["sessions_mib_hibernating"] = round(
                limits.dovecot_imap_sessions * session_memory_kib(per_process, 30) / 1024)
        return {"mailboxes": mailboxes, "sessions_per_user": sessions_per_user, "ldap_domains": ldap_domains,
                "parameters": parameters,
                "current": {name: current.get(name) for name in parameters},
                "limits": limits.as_dict(), "memory": memory,
                "session_memory_kib": session_kib, "imap_sessions_per_process": per_process,
                "imap_hibernate_after": hibernate_after}

    def apply(self, estimate: dict[str, Any]) -> dict:
        """Store the estimate's parameters in the active template's values (checked, with the
        whole chain of limits, before anything is stored; audit-logged)."""
        missing = [name for name in LOAD_PARAMETERS if name not in self.app.templates.active().parameter_specs]
        if missing:
            raise ValidationError(f"the active template declares no {', '.join(missing)}: it sizes its limits "
                                  "itself (extend standard to use rupost sizing)")
        return self.app.templates.set_parameters(dict(estimate["parameters"]))
