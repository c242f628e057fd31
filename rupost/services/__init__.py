"""The service layer: every use case the CLI, the wizard, the panel and the daemons call.

A ``Runtime`` is what lives as long as the process (layout, node configuration, database
engines, the component registry, the service backend, the component runtime); an
``Actor`` is who acts (login, the face they use, their address). ``runtime.services(actor)``
returns ``Services``, the typed facade through which every service is reached: each is
registered once below and built on first use, for that actor. Services raise RuPostError
subclasses with messages an administrator can act on.
"""
from __future__ import annotations

import functools
import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import config as node_config
from ..db.engine import Databases
from ..errors import PermissionDeniedError
from ..paths import Layout
from .cache import lookups_changed

if TYPE_CHECKING:
    from adapters import ComponentRegistry
    from adapters.policy import Limits

    from ..cluster.evacuation import EvacuationService
    from ..cluster.queue_relay import QueueRelay
    from ..cluster.rollouts import RolloutService
    from ..deploy.backend import ServiceBackend
    from ..deploy.runtime import ComponentRuntime
    from .admins import AdminService, Authenticator
    from .aliases import AliasService
    from .antispam_lists import AntispamListService
    from .api_tokens import ApiTokenService
    from .audit import AuditService
    from .autoconfig import AutoconfigService
    from .backup import BackupService
    from .blocklist import BlocklistService
    from .calendar_delegation import CalendarDelegationService
    from .certificates import CertificateService, DHParamService
    from .checks import CheckService
    from .components import ComponentService
    from .database_ha import DatabaseHAService
    from .db_roles import DbRoleService
    from .deploy import DeployService
    from .directories import DirectoryService
    from .distribution_lists import DistributionListService, LdapFilterService
    from .dkim import DkimService
    from .dns_records import DnsRecordService
    from .domains import DomainService
    from .groupware_migration import GroupwareMigrationService
    from .impersonation import ImpersonationService
    from .mailboxes import MailboxService
    from .mailqueues import MailQueueService
    from .migration import MigrationService
    from .nodes import NodeService
    from .push import PushService
    from .quota_usage import QuotaUsageService
    from .resources import ResourceService
    from .sender_rights import SenderRightService
    from .session_peaks import SessionPeakService
    from .settings import SettingsService
    from .shared_mailboxes import SharedMailboxService
    from .sizing import SizingService
    from .srs import SrsService
    from .stats import StatsService
    from .templates import TemplateService


@dataclass(frozen=True)
class Actor:
    """Who acts through the services: journalled with everything they change."""
    login: str
    source: str = "cli"  # the face: cli, panel, wizard, policy, sync, ...
    address: str | None = None  # the client address, for the panel
    details: Mapping[str, Any] = field(default_factory=dict)  # added to every audit record (relayed requests)
    domains: frozenset[str] | None = None  # a domain administrator's domains; None: every domain

    @classmethod
    def from_environment(cls, login: str | None = None, source: str = "cli") -> Actor:
        return cls(login or os.environ.get("SUDO_USER") or getpass.getuser(), source)


class Runtime:
    """What one process shares between every actor: built once, closed once."""

    def __init__(self, layout: Layout, config: node_config.NodeConfig) -> None:
        self.layout = layout.with_storage(config.mail_storage, config.queue_directory)
        self.config = config
        self.dbs = Databases(config.database)
        # postfix's cached lookups must not answer from rows this process just changed
        self.dbs.after_lookup_change("data", functools.partial(lookups_changed, self))
        # administrators' authenticators besides the local one (an LDAP bind, the panel's hooks)
        self.authenticators: list[Authenticator] = []

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None) -> Runtime:
        layout = Layout.at(root)
        return cls(layout, node_config.load(layout))

    def services(self, actor: Actor | None = None) -> Services:
        return Services(self, actor or Actor.from_environment())

    def close(self) -> None:
        self.dbs.dispose()

    @functools.cached_property
    def adapters(self) -> ComponentRegistry:
        from adapters import all_adapters

        return all_adapters()

    @functools.cached_property
    def backend(self) -> ServiceBackend:
        from ..deploy.backend import make_backend

        return make_backend(self.layout, self.config.service_backend)

    @functools.cached_property
    def component_runtime(self) -> ComponentRuntime:
        from ..deploy.runtime import ComponentRuntime
        from .node_data import DatabaseNodeData

        return ComponentRuntime(self.layout, self.config, self.adapters, self.backend, DatabaseNodeData(self.dbs))


class Services:
    """The service layer acting as one actor over a shared Runtime."""

    def __init__(self, runtime: Runtime, actor: Actor) -> None:
        self.runtime = runtime
        self.acting = actor

    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None, actor: str | None = None,
             source: str = "cli") -> Services:
        return Runtime.open(root).services(Actor.from_environment(actor, source))

    def as_actor(self, actor: Actor) -> Services:
        """The same runtime, another actor (a relayed request, a panel request)."""
        return self.runtime.services(actor)

    def close(self) -> None:
        self.runtime.close()

    @property
    def actor(self) -> str:
        return self.acting.login

    # ------------------------------------------------------------ domain scope of the actor
    def in_scope(self, domain: str) -> bool:
        return self.acting.domains is None or domain.lower() in self.acting.domains

    def require_domain(self, domain: str) -> None:
        """Every service that reads or changes one domain's data asks here, so a domain
        administrator stays inside their domains whatever face they use."""
        if not self.in_scope(domain):
            raise PermissionDeniedError(f"{self.actor} administers {', '.join(sorted(self.acting.domains or ()))} "
                                        f"only, not {domain}")

    def require_superadmin(self, what: str) -> None:
        """Actions that amount to running code on every node (importing or activating a
        template: its raw snippets and postfix/dovecot commands) or to weakening another
        administrator's login are for superadministrators, whatever face asks. A panel
        actor's role is read from the database at the call; the CLI's actor already holds
        the node's database credentials (config.json, root only)."""
        if self.acting.domains is not None:
            raise PermissionDeniedError(f"{what}: only a superadministrator may, not a domain administrator")
        if self.acting.source == "panel":
            identity = self.admins.identity(self.actor)
            if identity is None or not identity.is_superadmin:
                raise PermissionDeniedError(f"{what}: only a superadministrator may")

    def require_address(self, address: str) -> None:
        self.require_domain(address.rpartition("@")[2])

    def scoped(self, domains: list[str] | None) -> list[str] | None:
        """The domains a listing may show: those asked for, within the actor's scope."""
        if self.acting.domains is None:
            return domains
        if domains is None:
            return sorted(self.acting.domains)
        return [d for d in domains if self.in_scope(d)]

    @property
    def layout(self) -> Layout:
        return self.runtime.layout

    @property
    def config(self) -> node_config.NodeConfig:
        return self.runtime.config

    @property
    def dbs(self) -> Databases:
        return self.runtime.dbs

    @property
    def adapters(self) -> ComponentRegistry:
        return self.runtime.adapters

    @property
    def backend(self) -> ServiceBackend:
        return self.runtime.backend

    @property
    def component_runtime(self) -> ComponentRuntime:
        return self.runtime.component_runtime

    # ------------------------------------------------------------ the services, each registered once
    @functools.cached_property
    def audit(self) -> AuditService:
        from .audit import AuditService

        return AuditService(self)

    @functools.cached_property
    def api_tokens(self) -> ApiTokenService:
        from .api_tokens import ApiTokenService

        return ApiTokenService(self)

    @functools.cached_property
    def domains(self) -> DomainService:
        from .domains import DomainService

        return DomainService(self)

    @functools.cached_property
    def mailboxes(self) -> MailboxService:
        from .mailboxes import MailboxService

        return MailboxService(self)

    @functools.cached_property
    def aliases(self) -> AliasService:
        from .aliases import AliasService

        return AliasService(self)

    @functools.cached_property
    def antispam_lists(self) -> AntispamListService:
        from .antispam_lists import AntispamListService

        return AntispamListService(self)

    @functools.cached_property
    def templates(self) -> TemplateService:
        from .templates import TemplateService

        return TemplateService(self)

    @functools.cached_property
    def deploys(self) -> DeployService:
        from .deploy import DeployService

        return DeployService(self)

    @functools.cached_property
    def components(self) -> ComponentService:
        from .components import ComponentService

        return ComponentService(self)

    @functools.cached_property
    def rollouts(self) -> RolloutService:
        from ..cluster.rollouts import RolloutService

        return RolloutService(self)

    @functools.cached_property
    def evacuation(self) -> EvacuationService:
        from ..cluster.evacuation import EvacuationService

        return EvacuationService(self)

    @functools.cached_property
    def nodes(self) -> NodeService:
        from .nodes import NodeService

        return NodeService(self)

    @functools.cached_property
    def mailqueues(self) -> MailQueueService:
        from .mailqueues import MailQueueService

        return MailQueueService(self)

    @functools.cached_property
    def queue_relay(self) -> QueueRelay:
        from ..cluster.queue_relay import QueueRelay

        return QueueRelay(self)

    @functools.cached_property
    def checks(self) -> CheckService:
        from .checks import CheckService

        return CheckService(self)

    @functools.cached_property
    def database_ha(self) -> DatabaseHAService:
        from .database_ha import DatabaseHAService

        return DatabaseHAService(self)

    @functools.cached_property
    def sizing(self) -> SizingService:
        from .sizing import SizingService

        return SizingService(self)

    @functools.cached_property
    def stats(self) -> StatsService:
        from .stats import StatsService

        return StatsService(self)

    @functools.cached_property
    def session_peaks(self) -> SessionPeakService:
        from .session_peaks import SessionPeakService

        return SessionPeakService(self)

    @functools.cached_property
    def directories(self) -> DirectoryService:
        from .directories import DirectoryService

        return DirectoryService(self)

    @functools.cached_property
    def distribution_lists(self) -> DistributionListService:
        from .distribution_lists import DistributionListService

        return DistributionListService(self)

    @functools.cached_property
    def ldap_filters(self) -> LdapFilterService:
        from .distribution_lists import LdapFilterService

        return LdapFilterService(self)

    @functools.cached_property
    def settings(self) -> SettingsService:
        from .settings import SettingsService

        return SettingsService(self)

    @functools.cached_property
    def push(self) -> PushService:
        from .push import PushService

        return PushService(self)

    @functools.cached_property
    def impersonation(self) -> ImpersonationService:
        from .impersonation import ImpersonationService

        return ImpersonationService(self)

    @functools.cached_property
    def autoconfig(self) -> AutoconfigService:
        from .autoconfig import AutoconfigService

        return AutoconfigService(self)

    @functools.cached_property
    def migration(self) -> MigrationService:
        from .migration import MigrationService

        return MigrationService(self)

    @functools.cached_property
    def groupware_migration(self) -> GroupwareMigrationService:
        from .groupware_migration import GroupwareMigrationService

        return GroupwareMigrationService(self)

    @functools.cached_property
    def backups(self) -> BackupService:
        from .backup import BackupService

        return BackupService(self)

    @functools.cached_property
    def blocklist(self) -> BlocklistService:
        from .blocklist import BlocklistService

        return BlocklistService(self)

    def blocklist_with(self, limits: Limits) -> BlocklistService:
        """The block list with fixed limits instead of the active template's (the policy
        server's, from its configuration)."""
        from .blocklist import BlocklistService

        return BlocklistService(self, limits)

    @functools.cached_property
    def dkim(self) -> DkimService:
        from .dkim import DkimService

        return DkimService(self)

    @functools.cached_property
    def srs(self) -> SrsService:
        from .srs import SrsService

        return SrsService(self)

    @functools.cached_property
    def db_roles(self) -> DbRoleService:
        from .db_roles import DbRoleService

        return DbRoleService(self)

    @functools.cached_property
    def dns_records(self) -> DnsRecordService:
        from .dns_records import DnsRecordService

        return DnsRecordService(self)

    @functools.cached_property
    def certificates(self) -> CertificateService:
        from .certificates import CertificateService

        return CertificateService(self)

    @functools.cached_property
    def dhparams(self) -> DHParamService:
        from .certificates import DHParamService

        return DHParamService(self)

    @functools.cached_property
    def quota_usage(self) -> QuotaUsageService:
        from .quota_usage import QuotaUsageService

        return QuotaUsageService(self)

    @functools.cached_property
    def resources(self) -> ResourceService:
        from .resources import ResourceService

        return ResourceService(self)

    @functools.cached_property
    def calendar_delegations(self) -> CalendarDelegationService:
        from .calendar_delegation import CalendarDelegationService

        return CalendarDelegationService(self)

    @functools.cached_property
    def shared_mailboxes(self) -> SharedMailboxService:
        from .shared_mailboxes import SharedMailboxService

        return SharedMailboxService(self)

    @functools.cached_property
    def sender_rights(self) -> SenderRightService:
        from .sender_rights import SenderRightService

        return SenderRightService(self)

    @functools.cached_property
    def admins(self) -> AdminService:
        from .admins import AdminService
        from .directories import ldap_bind_authenticator

        if not any(a.name == "ldap" for a in self.runtime.authenticators):
            # administrators from LDAP domains (groups mapped to roles: rupost ldap-domains admins)
            self.runtime.authenticators.insert(0, ldap_bind_authenticator(self))
        return AdminService(self)


RuPost = Services  # the name the faces and the tests know the facade by
