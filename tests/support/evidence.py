"""Evidence of daemon reloads, read from the daemons themselves (their logs and pids),
not from what RuPost believes it did."""
from __future__ import annotations

import re

from rupost.paths import Layout

# what each daemon writes when it reloads its configuration
RELOAD_MARKERS = {
    "postfix": ("postfix", re.compile(r"master\[\d+\]: reload -- version")),
    "dovecot": ("dovecot", re.compile(r"SIGHUP received - reloading configuration")),
    "nginx": ("nginx-error", re.compile(r"signal 1 \(SIGHUP\) received")),
    "haproxy": ("haproxy", re.compile(r"Reloading HAProxy")),
}


def reload_evidence(layout: Layout, backend, components) -> dict:
    """Per component: reload markers seen in its log so far, and its main pid
    (memcached and SOGo reload by restarting, which changes the pid)."""
    evidence = {}
    for name in components:
        count = 0
        if name in RELOAD_MARKERS:
            log_name, pattern = RELOAD_MARKERS[name]
            try:
                count = len(pattern.findall(layout.log_file(log_name).read_text(errors="replace")))
            except OSError:
                count = 0
        evidence[name] = {"reloads": count, "pid": backend.pid(name)}
    return evidence
