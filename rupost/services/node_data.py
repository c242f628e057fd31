"""What components read from the database when they start (adapters.base.NodeData)."""
from __future__ import annotations

from sqlalchemy import select

from ..db.directory_models import LdapDomain
from ..db.engine import Databases
from ..db.roles import ConsumerLogin
from .db_roles import active_logins
from .directory_kerberos import keytabs
from .dkim import active_keys
from .srs import srs_secrets


class DatabaseNodeData:
    def __init__(self, dbs: Databases) -> None:
        self.dbs = dbs

    def dkim_keys(self) -> list[tuple[str, str, str]]:
        return active_keys(self.dbs)

    def srs_secrets(self) -> list[str]:
        return srs_secrets(self.dbs)

    def consumer_logins(self) -> dict[str, ConsumerLogin]:
        return active_logins(self.dbs)

    def kerberos_keytabs(self) -> list[tuple[str, bytes]]:
        with self.dbs.session("main") as s:
            return keytabs(s.scalars(select(LdapDomain).where(LdapDomain.enabled)).all())
