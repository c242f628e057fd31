"""SOGo: webmail, CalDAV and CardDAV.

SOGo 5.8 always reads /etc/sogo/{debconf,sogo}.conf (hard-coded paths) and merges
GNUstep user defaults over them key by key, silently ignoring a user-defaults
file it cannot parse. To make the rendered file the *only* configuration, sogod
runs in a private mount namespace where the generation's sogo directory is
bind-mounted over /etc/sogo (a parse error there is fatal, as it should be), with
GNUSTEP_CONFIG_FILE pointing at a private, empty user-defaults directory. The
package's files are never modified. Connection settings (database URLs, memcached,
IMAP/SMTP/Sieve servers) come from the node; behaviour keys from the template's
``defaults``. SIGHUP does not reload SOGo: a change means a restart.
"""
from __future__ import annotations

import os
import pwd
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from ldap3.utils.conv import escape_filter_chars

from rupost.errors import ComponentCheckError
from rupost.ldap.client import eoqualifier

from .base import (
    Adapter,
    Probe,
    ProcessSpec,
    RenderContext,
    RenderedFile,
    ldap_directory_schema,
    listen_schema,
    split_listen,
)
from .probes import probe_caldav

if TYPE_CHECKING:
    from rupost.config import DatabaseSettings

_DOMAIN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$"

_PLIST_VALUE = {"anyOf": [{"type": ["string", "integer", "boolean", "number"]}, {"type": "array"},
                          {"type": "object"}]}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["listen", "memcached", "imap_server", "smtp_server", "defaults"],
    "properties": {
        "listen": listen_schema(),
        "workers": {"type": "integer", "minimum": 1, "maximum": 64},
        "memcached": listen_schema(),
        "imap_server": {"type": "string", "pattern": r"^imaps?://"},
        "smtp_server": {"type": "string", "pattern": r"^smtps?://"},
        "sieve_server": {"type": "string", "pattern": r"^sieve://"},
        # the global address list (directory users, materialised in rupost_data) as a
        # shared address book of every user (rupost.services.directories)
        "gal": {"type": "boolean"},
        # groups of mail domains whose users see each other in the address books; any
        # other domain sees only itself (address_book_scope)
        "address_book_shared_domains": {
            "type": "array",
            "items": {"type": "array", "items": {"type": "string", "pattern": _DOMAIN}},
        },
        # authentication of directory users by a bind, one source per LDAP domain
        # (rupost.services.directories); identities still come from the SQL source
        "ldap_sources": ldap_directory_schema(
            ["name", "uris", "bind_dn", "bind_password", "base", "domains"], uri_pattern=r"^ldaps?://[^\s/]+$",
            object_class={"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9-]*$"},
            domains={"type": "array", "items": {"type": "string"}}),
        "defaults": {
            "type": "object",
            "propertyNames": {"pattern": r"^(SOGo|WO|NGImap4|NGMime|OCS|Sx|GCS)[A-Za-z0-9]*$"},
            "additionalProperties": _PLIST_VALUE,
        },
    },
}

# keys RuPost sets itself; a template must not override connection plumbing
_MANAGED = {"WOPort", "WOWorkersCount", "WOLogFile", "WOPidFile", "SOGoProfileURL", "OCSFolderInfoURL",
            "OCSSessionsFolderURL", "OCSEMailAlarmsFolderURL", "OCSStoreURL", "OCSAclURL", "OCSCacheFolderURL",
            "OCSAdminURL", "SOGoMemcachedHost", "SOGoIMAPServer", "SOGoSMTPServer", "SOGoSieveServer",
            "SOGoUserSources", "SOGoDomainsVisibility"}

_BARE = re.compile(r"^[A-Za-z0-9_.$]+$")


def plist_string(text: str) -> str:
    """Always quoted; GNUstep reads non-ASCII (Cyrillic names) only as \\UXXXX escapes."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20:
            out.append(f"\\{code:03o}")
        elif code > 0x7E:
            units = ch.encode("utf-16-be")
            out.extend(f"\\U{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def plist(value: object, indent: int = 0) -> str:
    """Serialise to the OpenStep (old-style) property list syntax GNUstep reads."""
    pad = "  " * indent
    if isinstance(value, bool):
        return "YES" if value else "NO"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return plist_string(value)
    if isinstance(value, list):
        inner = ",\n".join(f"{pad}  {plist(v, indent + 1)}" for v in value)
        return f"(\n{inner}\n{pad})" if value else "()"
    if isinstance(value, dict):
        inner = "\n".join(f"{pad}  {k if _BARE.match(k) else plist_string(k)} = {plist(v, indent + 1)};"
                          for k, v in value.items())
        return f"{{\n{inner}\n{pad}}}"
    raise ValueError(f"cannot express {value!r} in a property list")


def _db_url(ctx: RenderContext, table: str) -> str:
    db = ctx.consumer_database("sogo")
    # SOPE takes the server from the URL's host and port; a Unix socket directory cannot be
    # written there, so the URL leaves both out and libpq reads them from database_environment()
    server = "" if db.host.startswith("/") else f"{db.host}:{db.port}"
    return (f"postgresql://{quote(db.user, safe='')}:{quote(db.password, safe='')}@{server}/"
            f"{quote(db.data, safe='')}/{table}")


def database_environment(db: DatabaseSettings) -> dict:
    """libpq's PGHOST and PGPORT for a database on a Unix socket (see _db_url); none for TCP."""
    return {"PGHOST": db.host, "PGPORT": str(db.port)} if db.host.startswith("/") else {}


def source_filter(src: dict) -> str:
    """The LDAP filter of an LDAP domain's SOGo source: its accounts (class, the
    administrator's filter, not disabled: what dovecot applies to IMAP) with an address in
    one of its mail domains. SOGo asks every source in turn, and dovecot's passdbs answer
    only for their own domains (username_filter): without the domains, a second LDAP domain
    on the same directory would let in the accounts the first one's filter leaves out."""
    accounts = src.get("filter") or f"(objectClass={src.get('object_class') or 'person'})"
    domains = "".join(f"(mail=*@{escape_filter_chars(d)})" for d in src["domains"])
    return f"(&{accounts}(|{domains}))"


def sogo_defaults(model: dict, ctx: RenderContext) -> dict:
    """The template's defaults with the keys RuPost manages: the connections and the
    sources: the SQL users and the global address list (an address book only) for every
    domain, and the directory of each LDAP-bound mail domain in that domain's entry of
    ``domains`` (ldap_sources_by_domain)."""
    defaults = dict(model["defaults"])
    defaults.update(connection_defaults(model, ctx))
    defaults["SOGoUserSources"] = [sql_user_source(ctx), *([gal_source(ctx)] if model.get("gal") else [])]
    scope = address_book_scope(model.get("address_book_shared_domains") or [])
    domains = {**scope.pop("domains", {}), **ldap_sources_by_domain(model.get("ldap_sources") or [])}
    defaults.update(scope)
    if domains:
        defaults["domains"] = domains
    if model.get("sieve_server"):
        defaults["SOGoSieveServer"] = model["sieve_server"]
    return defaults


def address_book_scope(groups: list[list[str]]) -> dict:
    """SOGo's keys that let grouped domains see each other in the address books.

    The SQL sources name their ``domain`` column (DomainFieldName), so SOGo reads a user's
    domain from the user's own row and adds ``domain = <it>`` to every search, listing and
    card lookup of those sources: with nothing more, each domain sees only itself, and a
    domain added later is scoped by its rows alone. SOGoDomainsVisibility widens that to a
    group; SOGo 5.8 ignores a group member that is not a key of the ``domains`` dictionary
    (SOGoSystemDefaults visibleDomainsForDomain:), so each grouped domain gets an entry
    there: empty, which changes nothing else (every other key is inherited from the top
    level), unless the domain's directory is in it (ldap_sources_by_domain)."""
    if not groups:
        return {}
    return {"SOGoDomainsVisibility": groups,
            "domains": {name: {} for group in groups for name in group}}


def connection_defaults(model: dict, ctx: RenderContext) -> dict:
    """sogod's listener, files, database tables, memcached and mail servers."""
    return {
        "WOPort": model["listen"],
        "WOWorkersCount": model.get("workers", 3),
        "WOLogFile": str(ctx.layout.log_file("sogo")),
        "WOPidFile": str(ctx.layout.run_dir("sogo") / "sogo.pid"),
        "SOGoProfileURL": _db_url(ctx, "sogo_user_profile"),
        "OCSFolderInfoURL": _db_url(ctx, "sogo_folder_info"),
        "OCSSessionsFolderURL": _db_url(ctx, "sogo_sessions_folder"),
        "OCSEMailAlarmsFolderURL": _db_url(ctx, "sogo_alarms_folder"),
        # shared tables: a fixed set of 8 tables instead of 3 per user folder
        "OCSStoreURL": _db_url(ctx, "sogo_store"),
        "OCSAclURL": _db_url(ctx, "sogo_acl"),
        "OCSCacheFolderURL": _db_url(ctx, "sogo_cache_folder"),
        "SOGoMailSpoolPath": str(ctx.layout.sogo_home / "spool"),
        "SOGoMemcachedHost": model["memcached"],
        "SOGoIMAPServer": model["imap_server"],
        "SOGoSMTPServer": model["smtp_server"],
    }


def sql_user_source(ctx: RenderContext) -> dict:
    """RuPost's users (and calendar resources) from the database."""
    return {
        "type": "sql",
        "id": "rupost_local",
        "viewURL": _db_url(ctx, "sogo_users"),
        "canAuthenticate": True,
        "isAddressBook": True,
        "displayName": "RuPost users",
        "userPasswordAlgorithm": "sha512-crypt",
        "prependPasswordScheme": True,
        # calendar resources (rupost resources): kind location/thing makes the row a
        # SOGo resource, which accepts invitations by itself up to its booking limit
        "KindFieldName": "kind",
        "MultipleBookingsFieldName": "multiple_bookings",
        # each user sees its own domain's entries (address_book_scope)
        "DomainFieldName": "domain",
    }


def ldap_sources_by_domain(sources: list[dict]) -> dict:
    """Each LDAP-bound mail domain's entry of SOGo's ``domains``: its directory as its own
    user source.

    Why not one top-level source per LDAP domain: SOGo takes a user's identity (and its
    domain, which scopes the address books) from the first source that knows the login, in
    the hash order of the source ids; a top-level LDAP source knows its users too and
    answers domain "" (an LDAP entry has no domain column), which would hide every address
    book entry from them at random. A source inside ``domains`` answers only logins of its
    domain (SOGo 5.8 takes the domain of a login ``user@DOMAIN`` when DOMAIN is a key of
    ``domains``), so the password is still checked by a bind there, while the identity is
    always the user's SQL row, found first by the domain-less lookups."""
    out: dict[str, dict] = {}
    for src in sources:
        for domain in src["domains"]:
            out.setdefault(domain, {"SOGoUserSources": []})["SOGoUserSources"].append(ldap_user_source(src, domain))
    return out


def ldap_user_source(src: dict, domain: str) -> dict:
    """An LDAP domain's directory for one of its mail domains. A directory user's SQL row
    carries an unusable password, so the bind against the directory decides. SOGo looks
    the login up with source_filter(), written as the EOQualifier SOGo takes."""
    uri = urlsplit(src["uris"][0])
    return {
        "type": "ldap",
        "id": f"rupost_ldap_{src['name']}_{domain}",
        "displayName": f"Directory {src['name']}",
        "hostname": uri.hostname,
        "port": uri.port or (636 if uri.scheme == "ldaps" else 389),
        "encryption": "SSL" if uri.scheme == "ldaps" else ("STARTTLS" if src.get("starttls") else "NONE"),
        "baseDN": src["base"],
        "bindDN": src["bind_dn"],
        "bindPassword": src["bind_password"],
        "canAuthenticate": True,
        "isAddressBook": False,
        "scope": "SUB",
        "filter": eoqualifier(source_filter({**src, "domains": [domain]}),
                              f"components.sogo.ldap_sources {src['name']}: filter"),
        "bindFields": ["mail"],
        "UIDFieldName": "mail",
        "IDFieldName": "mail",
        "IMAPLoginFieldName": "mail",
        "CNFieldName": "cn",
        "MailFieldNames": ["mail"],
        "passwordPolicy": False,
    }


def gal_source(ctx: RenderContext) -> dict:
    """The global address list (directory users materialised in rupost_data)."""
    return {
        "type": "sql",
        "id": "rupost_gal",
        "viewURL": _db_url(ctx, "sogo_gal"),
        "canAuthenticate": False,
        "isAddressBook": True,
        "listRequiresDot": False,
        "displayName": "Global Address List",
        "DomainFieldName": "domain",
    }


def shared_domains_problems(groups: list[list[str]]) -> list[str]:
    """A group shares one address book among two domains or more, and a domain belongs to one
    group at most: SOGo's visibility is not transitive, so a domain in two groups would see
    both while they do not see each other."""
    where = "components.sogo.address_book_shared_domains"
    problems = []
    seen: dict[str, int] = {}
    for number, group in enumerate(groups, 1):
        if len(set(group)) < 2:
            problems.append(f"{where}: group {number} ({', '.join(group) or 'empty'}) names fewer than two "
                            "domains; a domain alone already sees its own users")
        for name in dict.fromkeys(group):
            if name in seen:
                problems.append(f"{where}: {name} is in groups {seen[name]} and {number}; a domain belongs to "
                                "one group, merge the two")
            seen.setdefault(name, number)
    return problems


class SOGoAdapter(Adapter):
    name = "sogo"
    in_mail_unit = True
    probes = (Probe(probe_caldav, "https"),)
    schema = SCHEMA
    user = "sogo"

    def check_model(self, model: dict) -> list[str]:
        problems = [f"components.sogo.defaults.{key}: managed by RuPost, set it through the sogo section keys"
                    for key in model["defaults"] if key in _MANAGED]
        problems += [f"components.sogo.defaults.{key}: not a valid property list key"
                     for key in model["defaults"] if not _BARE.match(key)]
        return problems + shared_domains_problems(model.get("address_book_shared_domains") or [])

    def render(self, model: dict, ctx: RenderContext) -> list[RenderedFile]:
        text = "/* Generated by RuPost from the active configuration template. Do not edit. */\n"
        text += plist(sogo_defaults(model, ctx)) + "\n"
        return [RenderedFile("sogo.conf", text, mode=0o640, group="sogo"),
                RenderedFile("GNUstep.conf", render_gnustep_conf(ctx))] + render_ldap_conf(model, ctx)

    def _prepare_dirs(self, ctx: RenderContext) -> None:
        sogo = pwd.getpwnam(self.user)
        home = ctx.layout.sogo_home
        for d in (ctx.layout.run_dir(self.name), ctx.layout.logs, home, home / "defaults", home / "spool"):
            d.mkdir(parents=True, exist_ok=True)
        for d in (ctx.layout.run_dir(self.name), home, home / "defaults", home / "spool"):
            os.chown(d, sogo.pw_uid, sogo.pw_gid)
        os.chmod(home / "defaults", 0o700)
        log = ctx.layout.log_file(self.name)
        log.touch(exist_ok=True)
        os.chown(log, sogo.pw_uid, sogo.pw_gid)

    def validate(self, config_dir: Path, ctx: RenderContext) -> None:
        path = config_dir / "sogo.conf"
        out = self.run_checker(["plparse", str(path)])
        if "a dictionary" not in out:
            raise ComponentCheckError(self.name, f"{path}: {out}")

    def process(self, ctx: RenderContext) -> ProcessSpec:
        host, port = split_listen(f"127.0.0.1:{ctx.node.port('sogo')}")
        conf_dir = ctx.config_dir(self.name)
        return ProcessSpec(
            argv=["unshare", "--mount", "--propagation", "private", "--",
                  "sh", "-c", 'mount --bind "$0" /etc/sogo && exec "$@"', str(conf_dir),
                  "setpriv", f"--reuid={self.user}", f"--regid={self.user}", "--init-groups", "--inh-caps=-all",
                  "/usr/sbin/sogod", "-WONoDetach", "YES", "-WOLogFile", "-"],
            # libldap (the LDAP sources): trusted CAs from the rendered ldap.conf only
            env={"GNUSTEP_CONFIG_FILE": str(conf_dir / "GNUstep.conf"), "LDAPCONF": str(conf_dir / "ldap.conf"),
                 **database_environment(ctx.database)},
            reload="restart",
            prepare=lambda: self._prepare_dirs(ctx),
            ports=[(host, port)],
            # idle workers ignore SIGTERM for ~30 s; the process group is killed after this
            stop_timeout=3.0,
        )


def sogo_tool_command(conf_dir: Path, args: list[str], database: DatabaseSettings) -> tuple[list[str], dict]:
    """argv and environment of ``sogo-tool`` reading the same configuration as sogod
    (the generation's sogo directory over /etc/sogo, as the sogo user, `database` as sogod
    reaches it)."""
    argv = ["unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'mount --bind "$0" /etc/sogo && exec "$@"', str(conf_dir),
            "setpriv", f"--reuid={SOGoAdapter.user}", f"--regid={SOGoAdapter.user}", "--init-groups",
            "--inh-caps=-all", "/usr/sbin/sogo-tool", *args]
    env = {**os.environ, "GNUSTEP_CONFIG_FILE": str(conf_dir / "GNUstep.conf"), "LDAPCONF": str(conf_dir / "ldap.conf"),
           **database_environment(database)}
    return argv, env


def render_gnustep_conf(ctx: RenderContext) -> str:
    """GNUstep's own config, redirecting user defaults to a private empty directory."""
    try:
        base = Path("/etc/GNUstep/GNUstep.conf").read_text()
    except OSError:
        base = ""
    lines = [line for line in base.splitlines()
             if not line.startswith(("GNUSTEP_USER_DEFAULTS_DIR=", "GNUSTEP_USER_CONFIG_FILE="))]
    lines += ["# RuPost: no per-user GNUstep config; user defaults in a private empty directory",
              "GNUSTEP_USER_CONFIG_FILE=", f"GNUSTEP_USER_DEFAULTS_DIR={ctx.layout.sogo_home / 'defaults'}"]
    return "\n".join(lines) + "\n"


def render_ldap_conf(model: dict, ctx: RenderContext) -> list[RenderedFile]:
    """libldap's settings for sogod: the directories' CAs (one bundle: libldap's TLS
    settings are process-wide) and the system's, certificates always verified."""
    cas = list(dict.fromkeys(s["ca_pem"].strip() + "\n" for s in model.get("ldap_sources") or []
                             if s.get("ca_pem", "").strip()))
    lines = ["# Generated by RuPost: libldap settings of sogod (LDAP domains).",
             "TLS_CACERTDIR /etc/ssl/certs", "TLS_REQCERT demand"]
    files = []
    if cas:
        files.append(RenderedFile("ldap-ca.pem", "".join(cas)))
        lines.insert(1, f"TLS_CACERT {ctx.config_dir('sogo') / 'ldap-ca.pem'}")
    return files + [RenderedFile("ldap.conf", "\n".join(lines) + "\n")]
