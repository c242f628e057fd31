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
from urllib.parse import quote

from rupost.errors import ComponentCheckError

from .base import Adapter, ProcessSpec, RenderContext, RenderedFile, listen_schema, split_listen

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
            "SOGoUserSources"}

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
            out.append("\\%03o" % code)
        elif code > 0x7E:
            units = ch.encode("utf-16-be")
            out.extend("\\U%02x%02x" % (units[i], units[i + 1]) for i in range(0, len(units), 2))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def plist(value, indent: int = 0) -> str:
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
        inner = "\n".join(f"{pad}  {k} = {plist(v, indent + 1)};" for k, v in value.items())
        return f"{{\n{inner}\n{pad}}}"
    raise ValueError(f"cannot express {value!r} in a property list")


def _db_url(ctx: RenderContext, table: str) -> str:
    db = ctx.database
    return (f"postgresql://{quote(db.user, safe='')}:{quote(db.password, safe='')}@{db.host}:{db.port}/"
            f"{quote(db.data, safe='')}/{table}")


def sogo_defaults(model: dict, ctx: RenderContext) -> dict:
    defaults = dict(model["defaults"])
    defaults.update({
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
        "SOGoUserSources": [{
            "type": "sql",
            "id": "rupost_local",
            "viewURL": _db_url(ctx, "sogo_users"),
            "canAuthenticate": True,
            "isAddressBook": True,
            "displayName": "RuPost users",
            "userPasswordAlgorithm": "sha512-crypt",
            "prependPasswordScheme": True,
        }],
    })
    if model.get("sieve_server"):
        defaults["SOGoSieveServer"] = model["sieve_server"]
    return defaults


class SOGoAdapter(Adapter):
    name = "sogo"
    schema = SCHEMA
    user = "sogo"

    def check_model(self, model: dict) -> list[str]:
        problems = [f"components.sogo.defaults.{key}: managed by RuPost, set it through the sogo section keys"
                    for key in model["defaults"] if key in _MANAGED]
        return problems + [f"components.sogo.defaults.{key}: not a valid property list key"
                           for key in model["defaults"] if not _BARE.match(key)]

    def render(self, model: dict, ctx: RenderContext) -> list[RenderedFile]:
        text = "/* Generated by RuPost from the active configuration template. Do not edit. */\n"
        text += plist(sogo_defaults(model, ctx)) + "\n"
        return [RenderedFile("sogo.conf", text, mode=0o640, group="sogo"),
                RenderedFile("GNUstep.conf", render_gnustep_conf(ctx))]

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
            env={"GNUSTEP_CONFIG_FILE": str(conf_dir / "GNUstep.conf")},
            reload="restart",
            prepare=lambda: self._prepare_dirs(ctx),
            ports=[(host, port)],
            # idle workers ignore SIGTERM for ~30 s; the process group is killed after this
            stop_timeout=3.0,
        )


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
