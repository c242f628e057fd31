"""Every use case of the service layer is reachable from the CLI, the REST API and the panel,
or this table says why not.

A use case is a public method of a service (``rupost.services.Services``' registered
services), its own or inherited from a RuPost class (DirectoryService's mixins), that at least
one face calls; a face "has" it when its modules call
``.<service>.<method>(`` (the CLI through ``c.app``, the API and the panel through ``g.rp``
or a job's ``rp``). The test fails when a face lacks a use case without a reason below, and
when a reason has gone stale (the face has it now, or the use case is gone), so the table
stays true. Keys are ``service.method``, or ``service.*`` for every use case of a service.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import re
from pathlib import Path

import rupost.services as services_module

ROOT = Path(__file__).resolve().parent.parent / "rupost"
FACES = {"cli": [*(ROOT / "cli").glob("*.py")], "api": [*(ROOT / "api").glob("*.py")],
         "panel": [*(ROOT / "panel" / "areas").glob("*.py"), ROOT / "panel" / "jobs.py"]}

INTERNAL = "internal to authentication or journaling, not an administrator's action"
NODE_LOCAL = "acts on the daemons of the node it runs on: the CLI's (root on that node), not a remote face's"
PAGED = "this face lists through the paged, SQL-filtered variant (page) instead"
SHOW_IN_LIST = "the CLI shows the object in its list (--json)"

REASONS: dict[str, dict[str, str]] = {
    # authentication, sessions, journaling: what the faces do on their own, not use cases
    "admins.login": {"cli": INTERNAL, "api": INTERNAL},
    "admins.logout": {"cli": INTERNAL, "api": INTERNAL},
    "admins.setting": {"cli": INTERNAL, "api": INTERNAL},
    "admins.new_totp_secret": {"cli": "a second factor is enrolled by its owner in the panel (a phone scans it)",
                               "api": "a second factor is enrolled by its owner in the panel"},
    "admins.totp_uri": {"cli": "see admins.new_totp_secret", "api": "see admins.new_totp_secret"},
    "admins.enable_totp": {"cli": "see admins.new_totp_secret", "api": "see admins.new_totp_secret"},
    "admins.remove_own_totp": {"cli": "an administrator's own factor: the panel's account page, with password "
                                      "and code", "api": "tokens have no second factor to remove"},
    "admins.change_own_password": {"cli": "the CLI sets any password (admins passwd): root needs no current one",
                                   "api": "tokens have no password"},
    "admins.set_language": {"cli": "the panel's language, chosen in the panel", "api": "the panel's language"},
    "admins.show": {"cli": SHOW_IN_LIST},
    "admins.lockouts": {"cli": "rupost admins unlock names the key; the list is the panel's page and "
                               "GET /api/v1/security/lockouts"},
    "admins.*": {"api": "administrators are managed by people in the panel or by root: a token cannot make or "
                        "change the accounts that make tokens"},
    "admins.rotate_session_key": {"panel": "rotating the key ends every session, the panel's own included: root "
                                           "does it (rupost panel rotate-session-key)"},
    "api_tokens.authenticate": {"cli": INTERNAL, "panel": INTERNAL},
    "api_tokens.*": {"api": "a token does not make tokens: the panel and the CLI do"},
    "audit.record": {"cli": INTERNAL, "api": INTERNAL},
    "audit.monitor_events": {"cli": "rupost check and the node agent's log show them"},
    # lists: the paged variants
    "aliases.page": {"cli": "the CLI lists a domain's aliases whole (aliases list --domain)"},
    "aliases.list": {"api": PAGED, "panel": PAGED},
    "aliases.show": {"cli": SHOW_IN_LIST, "panel": "the aliases page lists and filters them"},
    "antispam_lists.show": {"cli": SHOW_IN_LIST, "panel": "the sender lists page lists and filters them"},
    "domains.page": {"cli": "the CLI lists every domain (domains list)"},
    "domains.list": {"api": PAGED, "panel": PAGED},
    "domains.show": {"cli": SHOW_IN_LIST, "panel": "the domains page lists them with their counts"},
    "mailboxes.page": {"cli": "the CLI lists with mailboxes.list (--domain, --search, --limit)"},
    "mailboxes.list": {"api": PAGED, "panel": PAGED},
    "impersonation.deploy_hint": {"api": "the CLI's note after a change that a deploy switches the feature on; "
                                         "docs/api.md says it"},
    "resources.show": {"cli": SHOW_IN_LIST, "panel": "the resources page lists them whole"},
    "certificates.domain_note": {"panel": "shown by the domains page through certificates"},
    "directories.get_settings": {"cli": INTERNAL, "api": "the settings with the service account's password: the "
                                                         "API shows them without it (directories.show)"},
    "directories.sync_all": {"panel": "the panel syncs one LDAP domain at a time (directories.sync)",
                             "api": "the API syncs one LDAP domain at a time (a job each); the scheduler syncs all"},
    "nodes.agent_alive": {"cli": INTERNAL, "api": INTERNAL},
    "nodes.alive": {"api": INTERNAL},
    "nodes.show": {"panel": "the nodes page shows every node"},
    "quota_usage.*": {"cli": "measured by the scheduler on each node; the dashboard reads it",
                      "api": "measured by the scheduler on each node; GET /api/v1/quota reads it (summary)"},
    "quota_usage.summary": {"cli": "the dashboard's and GET /api/v1/quota's reading of the scheduler's measurement"},
    "settings.mail_host": {"cli": "rupost settings mail-host (mail_host_state)",
                           "api": "GET /api/v1/settings/mail-host (mail_host_state)"},
    "settings.set": {"cli": "settings are set by name through their own commands",
                     "api": "the panel's login rules (session timeout, lockout thresholds): set by people in the "
                            "panel, like the administrators themselves (admins.*); every other setting has its "
                            "own checked operation (thresholds, mail host, retention, LDAP safety share)"},
    "settings.mail_host_state": {"panel": "the settings page shows mail_host"},
    # whole services the API (and some the panel) do not offer yet, or that act on the local node
    "autoconfig.*": {"api": "answers mail clients (the autoconfig server on its own port), not administrators; "
                            "the CLI previews the answers", "panel": "see the API's reason"},
    "backups.list": {"cli": "rupost backup prints where it wrote; the list is of the default directory, for the "
                            "remote faces"},
    "blocklist.expire": {"api": "run by the policy server and the scheduler", "panel": "see the API's reason"},
    "checks.last_states": {"cli": "rupost check runs the checks and prints their states now"},
    "components.*": {"api": NODE_LOCAL, "panel": NODE_LOCAL},
    "db_roles.*": {"api": "rotates the database credentials the API itself runs with: root's",
                   "panel": "see the API's reason"},
    "deploys.deploy": {"api": "the API's deploy job calls it (rupost.panel.jobs.deploy_work)"},
    "deploys.rollback": {"api": "the API's rollback job calls it (rupost.panel.jobs.rollback_work)"},
    "distribution_lists.set": {"panel": "the list page's forms post field by field to the same service calls"},
    "dkim.apply": {"api": "rewrites OpenDKIM's files from the database: a repair on the node (rupost domains dkim "
                            "apply); generating and rotating apply it already", "panel": "see the API's reason"},
    "dns_records.zone_text": {"api": "the API gives the records as JSON (dns_records.records); the zone text is "
                                     "the CLI's rendering of them",
                              "panel": "the panel shows the records as a table (dns_records.records)"},
    "migration.run": {"panel": "it reads the sources' passwords from a map and runs for minutes or hours: the CLI "
                               "and the API start it (a job), the panel shows its state"},
    "groupware_migration.run": {"panel": "it reads files and source passwords given on the node and runs for minutes "
                                         "or hours: the CLI starts it, the panel shows its jobs and reports"},
    # issue 29's shared mailboxes, send rights and delegated calendars
    "shared_mailboxes.sync_acl": {"panel": "a repair: it rewrites the ACL files in the mail storage from the "
                                           "database (rupost shared-mailboxes sync)",
                                  "api": "a repair run by root where the mail storage is mounted (rupost "
                                         "shared-mailboxes sync); every API change of members writes the file"},
    "push.deploy_hint": {"api": "see impersonation.deploy_hint"},
    "push.dispatch_once": {"api": "the dispatcher of the node's service (rupost push dispatch --once runs it by hand)",
                           "panel": "see the API's reason"},
    "push.run": {"api": "the dispatcher of the node's service", "panel": "see the API's reason"},
    "rollouts.*": {"api": "the API's deploy job runs a rolling deploy on a cluster (jobs.deploy_work)"},
    "session_peaks.record": {"api": INTERNAL, "panel": INTERNAL},
    "stats.ingest": {"api": "run by the scheduler on each node", "panel": "run by the scheduler on each node"},
    "stats.positions": {"api": INTERNAL, "panel": INTERNAL},
    "templates.export": {"api": "the template document (GET /api/v1/templates/{name}) carries the text it exports"},
}


def _service_classes() -> dict[str, type]:
    out = {}
    for name, prop in vars(services_module.Services).items():
        if not isinstance(prop, functools.cached_property):
            continue
        source = inspect.getsource(prop.func)
        module = re.search(r"from (\S+) import (\w+)", source).group(1)
        cls = re.search(r"return (\w+)\(", source).group(1)
        out[name] = getattr(importlib.import_module(module, "rupost.services"), cls)
    return out


def _calls(files, names) -> set[tuple[str, str]]:
    """``.service.method(`` calls, ``name.method(`` after ``name = <...>.service`` (a view
    that keeps a service in a local name), and ``helper(...).method(`` where ``helper`` returns
    ``<...>.service``."""
    alternatives = "|".join(map(re.escape, names))
    direct = re.compile(r"\.(%s)\.([a-z][a-z0-9_]*)\(" % alternatives)
    # def _service(c): ... return c.app.impersonation   then   _service(c).add(...)
    returned = re.compile(r"^def ([a-z_][a-z0-9_]*)\(.*?^    return [a-z_][\w.]*\.(%s)\s*$" % alternatives,
                          re.M | re.S)
    kept_pair = re.compile(r"\b([a-z_]\w*), ([a-z_]\w*) = [a-z_][\w.]*\.(%s), [a-z_][\w.]*\.(%s)\s*$"
                           % (alternatives, alternatives), re.M)
    kept = re.compile(r"\b([a-z_][a-z0-9_]*) = [a-z_][\w.]*\.(%s)\s*$" % alternatives, re.M)
    found = set()
    for f in files:
        text = f.read_text()
        found |= {(m.group(1), m.group(2)) for m in direct.finditer(text)}
        for local in kept.finditer(text):
            via = re.compile(r"\b%s\.([a-z][a-z0-9_]*)\(" % re.escape(local.group(1)))
            found |= {(local.group(2), m.group(1)) for m in via.finditer(text)}
        for pair in kept_pair.finditer(text):  # a, b = g.rp.certificates, g.rp.dhparams
            for local, service in ((pair.group(1), pair.group(3)), (pair.group(2), pair.group(4))):
                via = re.compile(r"\b%s\.([a-z][a-z0-9_]*)\(" % re.escape(local))
                found |= {(service, m.group(1)) for m in via.finditer(text)}
        for helper in returned.finditer(text):
            via = re.compile(r"\b%s\([^()]*\)\.([a-z][a-z0-9_]*)\(" % re.escape(helper.group(1)))
            found |= {(helper.group(2), m.group(1)) for m in via.finditer(text)}
    return found


def _public_methods(cls: type) -> set[str]:
    """The public callables of the service class and of every RuPost class it inherits from
    (DirectoryService's write-back, Kerberos and administrator mixins are its use cases too);
    ``object``'s and other libraries' are not use cases."""
    return {m for klass in cls.__mro__ if klass.__module__.startswith("rupost")
            for m, fn in vars(klass).items() if not m.startswith("_") and callable(fn)}


def _matrix():
    classes = _service_classes()
    methods = {(s, m) for s, cls in classes.items() for m in _public_methods(cls)}
    has = {face: _calls(files, classes) & methods for face, files in FACES.items()}
    use_cases = set().union(*has.values())
    return use_cases, has


def _reason(service: str, method: str, face: str) -> str | None:
    return (REASONS.get(f"{service}.{method}", {}).get(face) or REASONS.get(f"{service}.*", {}).get(face))


def test_every_use_case_is_in_every_face_or_has_a_reason():
    use_cases, has = _matrix()
    missing = sorted(f"{face}: {s}.{m}" for s, m in use_cases for face in FACES
                     if (s, m) not in has[face] and not _reason(s, m, face))
    assert not missing, "use cases missing from a face without a reason in REASONS:\n" + "\n".join(missing)


def test_no_reason_is_stale():
    use_cases, has = _matrix()
    stale = []
    for key, faces in REASONS.items():
        service, _, method = key.partition(".")
        cases = [(s, m) for s, m in use_cases if s == service and (method == "*" or m == method)]
        if not cases:
            stale.append(f"{key}: no face calls it")
            continue
        for face in faces:
            if all(case in has[face] for case in cases):
                stale.append(f"{key}: {face} has it now")
    assert not stale, "reasons in REASONS that are no longer true:\n" + "\n".join(stale)


def test_the_scan_sees_the_faces():
    _, has = _matrix()
    assert ("mailboxes", "add") in has["cli"] and ("mailboxes", "add") in has["api"]
    assert ("mailboxes", "add") in has["panel"] and ("api_tokens", "revoke") in has["panel"]
