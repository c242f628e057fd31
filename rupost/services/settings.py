"""Cluster-wide settings kept in the rupost database.

The mail host name (``mail_host``) is the one name of the mail system, for the whole cluster:
postfix's banner and EHLO (myhostname), dovecot's hostname and postmaster address, nginx's
server name, the MX target of `rupost domains dns`, the host mail clients are told (unless the
template parameter ``client_mail_host`` says otherwise) and the builtin certificate's main name.
Each node's own ``fqdn`` (config.json) only identifies that node. The wizard stores the mail
host name; an install that predates it falls back to the node's FQDN.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .. import validation
from ..db.models import Setting
from ..errors import ValidationError

if TYPE_CHECKING:
    from . import Services

MAIL_HOST = "mail_host"
TEMPLATE_PARAMETERS = "template_parameters"


class SettingsService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def get(self, key: str, default: Any = None) -> Any:
        with self.app.dbs.session("main") as s:
            row = s.get(Setting, key)
            return row.value if row is not None else default

    def set(self, key: str, value: Any) -> None:
        if key == MAIL_HOST:  # one way in, the one that checks the name
            raise ValidationError("the mail host name is set with `rupost settings mail-host NAME`, which checks it")
        self._store(key, value)

    def _store(self, key: str, value: Any) -> None:
        with self.app.dbs.session("main") as s:
            row = s.get(Setting, key)
            if row is None:
                s.add(Setting(key=key, value=value))
            else:
                row.value = value
        self.app.audit.record("settings.set", key, value=value)

    # ------------------------------------------------------------ monitoring thresholds
    def thresholds(self) -> dict:
        """The monitoring thresholds `rupost check` and the scheduler use: each key's value (its
        default unless set) and whether it is set."""
        from .checks import DEFAULTS, setting

        return {key: {"value": setting(self.app, key), "default": default, "set": self.get(key) is not None}
                for key, default in DEFAULTS.items()}

    def set_thresholds(self, updates: dict[str, Any], unset: Sequence[str] = ()) -> dict:
        """Set (or return to their defaults) monitoring thresholds: all are checked (known key,
        a whole number >= 0, warning below critical) before any is stored; journaled per key."""
        from .checks import DEFAULTS

        self.app.require_superadmin("changing monitoring thresholds")
        unknown = sorted(k for k in [*updates, *unset] if k not in DEFAULTS)
        if unknown:
            raise ValidationError(f"unknown threshold(s) {', '.join(unknown)}: use {', '.join(DEFAULTS)}")
        values = {}
        for key, raw in updates.items():
            text = str(raw).strip()
            if isinstance(raw, bool) or not text.isdigit():
                raise ValidationError(f"{key}: {text[:20]!r} is not a whole number (0 or more)")
            values[key] = int(text)
        wanted = {k: v["value"] for k, v in self.thresholds().items()}
        wanted.update({k: DEFAULTS[k] for k in unset})
        wanted.update(values)
        for low, high in (("monitor_disk_warning_percent", "monitor_disk_critical_percent"),
                          ("monitor_queue_warning", "monitor_queue_critical"),
                          ("monitor_antivirus_db_warning_hours", "monitor_antivirus_db_critical_hours")):
            if wanted[low] >= wanted[high]:
                raise ValidationError(f"{low} ({wanted[low]}) must be below {high} ({wanted[high]})")
        for key in ("monitor_disk_warning_percent", "monitor_disk_critical_percent",
                    "monitor_capacity_warning_percent"):
            if wanted[key] > 100:
                raise ValidationError(f"{key} is a percentage: {wanted[key]} is over 100")
        for key, value in values.items():
            self._store(key, value)
        for key in unset:
            with self.app.dbs.session("main") as s:
                row = s.get(Setting, key)
                if row is not None:
                    s.delete(row)
            self.app.audit.record("settings.unset", key)
        return self.thresholds()

    def mail_host(self) -> str:
        return self.get(MAIL_HOST) or self.app.config.fqdn

    def mail_host_state(self) -> dict:
        """The mail host name, whether it is fully qualified (and if not, why), and the host
        mail clients are told."""
        host = self.mail_host()
        problem = validation.mail_host_problem(host)
        return {"mail_host": host, "stored": self.get(MAIL_HOST) is not None, "qualified": problem is None,
                "problem": problem, "client_host": self.app.autoconfig.client_host(),
                "client_mail_host": self.client_mail_host()}

    def set_mail_host(self, value: str, allow_unqualified: bool = False) -> dict:
        """Check and store the mail host name; the state afterwards, with `changed` and the
        `notes` an administrator needs (the deploy that applies it, certificates that do not
        cover it, a client_mail_host that overrides it)."""
        host = validation.mail_host(value, allow_unqualified)
        changed = host != self.get(MAIL_HOST)
        if changed:
            self._store(MAIL_HOST, host)
        state = self.mail_host_state()
        notes = []
        if changed:
            notes.append("run `rupost deploy`: postfix (banner, EHLO), dovecot, SOGo and nginx take the name "
                         "at the next deploy; autoconfig and `rupost domains dns` use it at once")
        if state["problem"]:
            notes.append(f"{host} {state['problem']}")
        for cert in self.app.certificates.active_coverage():
            if host in cert["missing"]:
                fix = (f"`rupost cert regenerate-builtin {cert['name']}`" if cert["builtin"]
                       else "add a certificate that covers it (`rupost cert add`)")
                notes.append(f"the active {cert['type']} certificate {cert['name']} does not cover {host}: {fix}")
        if state["client_mail_host"]:
            notes.append(f"mail clients are told {state['client_mail_host']} (template parameter "
                         "client_mail_host); `rupost template set --unset client_mail_host` tells them the "
                         "mail host name")
        return {**state, "changed": changed, "notes": notes}

    def client_mail_host(self) -> str:
        """The template parameter client_mail_host, empty when not set."""
        params = self.get(TEMPLATE_PARAMETERS, {}) or {}
        return str(params.get("client_mail_host") or "").strip()
