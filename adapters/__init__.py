"""One adapter per mail component, all behind the interface in adapters.base.

``COMPONENTS`` below is the only list of components. Adding one is an adapter module
(its class declares how the core treats it: adapters.base) plus one line here; every
list the core needs — the template's sections, the TLS readers, the mail unit, the
probes, how logs are reopened — is derived from it by ``ComponentRegistry``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from .base import Adapter, LogReopen, NodeData, Probe, ProcessSpec, RenderContext, RenderedFile
from .clamd import ClamdAdapter
from .dovecot import DovecotAdapter
from .haproxy import HAProxyAdapter
from .lookup_cache import LookupCacheAdapter
from .memcached import MemcachedAdapter
from .nginx import NginxAdapter
from .opendkim import OpenDKIMAdapter
from .policy import PolicyAdapter
from .postfix import PostfixAdapter
from .postsrsd import PostSRSdAdapter
from .redis import RedisAdapter
from .rspamd import RspamdAdapter
from .sogo import SOGoAdapter

__all__ = ["COMPONENTS", "Adapter", "ComponentRegistry", "LogReopen", "NodeData", "Probe", "ProcessSpec",
           "RenderContext",
           "RenderedFile", "all_adapters"]

# Dependency order: the order components are started and (re)loaded in, reversed to stop.
# The policy server before dovecot (auth policy), OpenDKIM and PostSRSd before postfix (its
# milter, its SRS tables), Redis before rspamd (its state) and rspamd before postfix (port 25's
# milter; clamd before rspamd, which asks it), HAProxy last (it sends clients on only once everything behind it runs).
COMPONENTS: tuple[type[Adapter], ...] = (
    MemcachedAdapter, LookupCacheAdapter, PolicyAdapter, OpenDKIMAdapter, PostSRSdAdapter, RedisAdapter, ClamdAdapter,
    RspamdAdapter,
    DovecotAdapter,
    PostfixAdapter, SOGoAdapter, NginxAdapter, HAProxyAdapter,
)


class ComponentRegistry(Mapping[str, Adapter]):
    """The node's components by name, in dependency order, and the lists derived from
    what each adapter declares."""

    def __init__(self, adapters: Iterable[Adapter]) -> None:
        self._adapters = {adapter.name: adapter for adapter in adapters}

    def __getitem__(self, name: str) -> Adapter:
        return self._adapters[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._adapters)

    def __len__(self) -> int:
        return len(self._adapters)

    def __repr__(self) -> str:
        return f"ComponentRegistry({', '.join(self._adapters)})"

    def _where(self, wanted: Callable[[Adapter], bool]) -> tuple[str, ...]:
        return tuple(name for name, adapter in self._adapters.items() if wanted(adapter))

    @property
    def tls_readers(self) -> tuple[str, ...]:
        """Components that reload when the TLS files change."""
        return self._where(lambda a: a.reads_tls)

    @property
    def mail_unit(self) -> tuple[str, ...]:
        """Components that run as one unit: stopping one stops them all. HAProxy is the HA
        agent and keeps running to tell peers the node is down; memcached is a cache."""
        return self._where(lambda a: a.in_mail_unit)

    @property
    def required_sections(self) -> tuple[str, ...]:
        return self._where(lambda a: not a.optional_section)

    @property
    def optional_sections(self) -> tuple[str, ...]:
        """Components added after the first release: a template without their section (one
        pinned at import before they existed) gets an empty one, i.e. the adapter's defaults."""
        return self._where(lambda a: a.optional_section)

    def log_reopen(self, name: str) -> LogReopen:
        return self._adapters[name].log_reopen

    def probes(self) -> list[tuple[str, Probe]]:
        """(component, probe) for every probe, in dependency order."""
        return [(name, probe) for name, adapter in self._adapters.items() for probe in adapter.probes]


def all_adapters() -> ComponentRegistry:
    return ComponentRegistry(cls() for cls in COMPONENTS)
