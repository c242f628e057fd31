"""The service layer: every use case the CLI, the wizard and the panel call.

Faces never talk to SQL or to a daemon directly; they build a ``RuPost`` for a
root and call its services, which raise RuPostError subclasses with messages an
administrator can act on.
"""
from __future__ import annotations

import functools
import getpass
import os

from .. import config as node_config
from ..db.engine import Databases
from ..paths import Layout
from .cache import lookups_changed


class RuPost:
    def __init__(self, layout: Layout, config: node_config.NodeConfig, actor: str | None = None):
        self.layout = layout.with_storage(config.mail_storage, config.queue_directory)
        self.config = config
        self.dbs = Databases(config.database)
        # postfix's cached lookups must not answer from rows this process just changed
        self.dbs.after_write("data", functools.partial(lookups_changed, self))
        self.actor = actor or os.environ.get("SUDO_USER") or getpass.getuser()

    @classmethod
    def open(cls, root=None, actor: str | None = None) -> "RuPost":
        layout = Layout.at(root)
        return cls(layout, node_config.load(layout), actor)

    def close(self) -> None:
        self.dbs.dispose()

    @functools.cached_property
    def backend(self):
        from rupost.deploy.backend import make_backend

        return make_backend(self.layout, self.config.service_backend)

    @functools.cached_property
    def adapters(self):
        from adapters import all_adapters

        return all_adapters()

    @functools.cached_property
    def audit(self):
        from .audit import AuditService

        return AuditService(self)

    @functools.cached_property
    def domains(self):
        from .domains import DomainService

        return DomainService(self)

    @functools.cached_property
    def mailboxes(self):
        from .mailboxes import MailboxService

        return MailboxService(self)

    @functools.cached_property
    def aliases(self):
        from .aliases import AliasService

        return AliasService(self)

    @functools.cached_property
    def templates(self):
        from .templates import TemplateService

        return TemplateService(self)

    @functools.cached_property
    def deploys(self):
        from .deploy import DeployService

        return DeployService(self)

    @functools.cached_property
    def components(self):
        from .components import ComponentService

        return ComponentService(self)

    @functools.cached_property
    def rollouts(self):
        from rupost.cluster.rollouts import RolloutService

        return RolloutService(self)

    @functools.cached_property
    def evacuation(self):
        from rupost.cluster.evacuation import EvacuationService

        return EvacuationService(self)

    @functools.cached_property
    def nodes(self):
        from .nodes import NodeService

        return NodeService(self)

    @functools.cached_property
    def admins(self):
        from .admins import AdminService
        from .directories import ldap_bind_authenticator

        service = AdminService(self)
        # administrators from LDAP domains (groups mapped to roles: rupost ldap-domains admins)
        service.register_authenticator(ldap_bind_authenticator(self))
        return service

    @functools.cached_property
    def mailqueues(self):
        from rupost.services.mailqueues import MailQueueService

        return MailQueueService(self)

    @functools.cached_property
    def checks(self):
        from .checks import CheckService

        return CheckService(self)

    @functools.cached_property
    def stats(self):
        from .stats import StatsService

        return StatsService(self)

    @functools.cached_property
    def directories(self):
        from .directories import DirectoryService

        return DirectoryService(self)

    @functools.cached_property
    def distribution_lists(self):
        from .distribution_lists import DistributionListService

        return DistributionListService(self)

    @functools.cached_property
    def ldap_filters(self):
        from .distribution_lists import LdapFilterService

        return LdapFilterService(self)

    @functools.cached_property
    def settings(self):
        from .settings import SettingsService

        return SettingsService(self)

    @functools.cached_property
    def push(self):
        from .push import PushService

        return PushService(self)

    @functools.cached_property
    def impersonation(self):
        from .impersonation import ImpersonationService

        return ImpersonationService(self)

    @functools.cached_property
    def autoconfig(self):
        from .autoconfig import AutoconfigService

        return AutoconfigService(self)

    @functools.cached_property
    def migration(self):
        from .migration import MigrationService

        return MigrationService(self)

    @functools.cached_property
    def backups(self):
        from .backup import BackupService

        return BackupService(self)

    @functools.cached_property
    def blocklist(self):
        from .blocklist import BlocklistService

        return BlocklistService(self)

    @functools.cached_property
    def dkim(self):
        from .dkim import DkimService

        return DkimService(self)

    @functools.cached_property
    def dns_records(self):
        from .dns_records import DnsRecordService

        return DnsRecordService(self)
