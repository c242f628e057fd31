"""One adapter per mail component, all behind the interface in adapters.base."""
from .base import Adapter, ProcessSpec, RenderContext, RenderedFile  # noqa: F401


def all_adapters() -> dict[str, Adapter]:
    """Adapters in dependency order: the order components are (re)loaded in."""
    from .dovecot import DovecotAdapter
    from .haproxy import HAProxyAdapter
    from .memcached import MemcachedAdapter
    from .nginx import NginxAdapter
    from .postfix import PostfixAdapter
    from .sogo import SOGoAdapter

    ordered = [MemcachedAdapter(), DovecotAdapter(), PostfixAdapter(), SOGoAdapter(), NginxAdapter(),
               HAProxyAdapter()]
    return {adapter.name: adapter for adapter in ordered}
