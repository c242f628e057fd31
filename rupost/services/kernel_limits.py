"""The capacity check's rows for the limits outside the daemons' configuration: the running
kernel's inotify limits (rupost.templating.limits.KERNEL_SETTINGS) and the service backend's
open-file limit, each against what the active template's load needs (``rupost check``,
check ``capacity``; rupost/services/checks.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import OK, WARNING, CheckResult

if TYPE_CHECKING:
    from . import Services

# what each kernel setting is for, and what happens beyond it (rupost.templating.limits.KERNEL_SETTINGS)
_KERNEL_NEED = {
    # every imap process of the one vmail user watches its mailbox with an inotify instance;
    # beyond the limit dovecot stops watching (measured: 53 of 100 deliveries not announced
    # within 10 s with 300 held sessions and the default 128, docs/benchmarks.md)
    "inotify_instances": ("the imap processes at full load need",
                          "beyond it IDLE clients see new mail up to 30 s late",
                          " or pack sessions (imap_sessions_per_process)"),
    # an IDLE session watches its Maildir's new/, cur/ and index log
    "inotify_watches": ("the IDLE sessions at full load need",
                        "beyond it IDLE clients see new mail up to 30 s late", ""),
}


def kernel_limits(app: Services) -> list[CheckResult]:
    """The running kernel's limits and the service backend's open-file limit against what the
    active template's load needs (the package's /usr/lib/sysctl.d/60-rupost.conf sets the
    kernel's for PACKAGE_KERNEL_LOAD; a larger load needs more)."""
    from ..templating.limits import KERNEL_SETTINGS, derive_limits

    values = {p["name"]: p["value"] for p in app.templates.parameters()}
    limits = derive_limits(values)
    out = []
    for sysctl, path, field in KERNEL_SETTINGS:
        needed = getattr(limits, field)
        target = "inotify" if field == "inotify_instances" else field.replace("_", "-")
        try:
            with open(path) as fh:
                granted = int(fh.read().strip())
        except (OSError, ValueError) as exc:
            out.append(CheckResult("capacity", target, WARNING, f"cannot read {path}: {exc}"))
            continue
        what, beyond, other_remedy = _KERNEL_NEED[field]
        detail = f"{sysctl} = {granted}, {what} {needed} (limits.{field})"
        if granted >= needed:
            out.append(CheckResult("capacity", target, OK, detail))
        else:
            out.append(CheckResult("capacity", target, WARNING,
                                   f"{detail}: {beyond}; raise it (sysctl {sysctl}={needed}, and in "
                                   f"/etc/sysctl.d/60-rupost.conf to keep it){other_remedy}"))
    granted = app.backend.open_files_limit()
    detail = (f"open-file limit of the {app.backend.name} service backend = {granted}, the busiest daemon at "
              f"full load needs {limits.open_files} (limits.open_files)")
    if granted >= limits.open_files:
        out.append(CheckResult("capacity", "open-files", OK, detail))
    else:
        # a deploy refuses such a load; this one was deployed before the limit was lowered
        out.append(CheckResult("capacity", "open-files", WARNING,
                               f"{detail}: HAProxy would not start again and nginx or dovecot drop "
                               "connections at full load; raise LimitNOFILE (rupost-component@.service) "
                               "or the hard limit (ulimit -Hn)"))
    return out
