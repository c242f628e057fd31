"""Cluster-wide settings kept in the rupost database."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..db.models import Setting

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
        with self.app.dbs.session("main") as s:
            row = s.get(Setting, key)
            if row is None:
                s.add(Setting(key=key, value=value))
            else:
                row.value = value
        self.app.audit.record("settings.set", key, value=value)

    def mail_host(self) -> str:
        return self.get(MAIL_HOST) or self.app.config.fqdn
