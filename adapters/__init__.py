"""One adapter per mail component, all behind the interface in adapters.base."""
from .base import Adapter, ProcessSpec, RenderContext, RenderedFile  # noqa: F401

# The mail components of a node live and die together (guide §2.3). HAProxy is the
# HA agent: it keeps running to tell peers the node is down; memcached is a cache.
MAIL_UNIT = ("dovecot", "postfix", "sogo", "nginx")


def all_adapters() -> dict[str, Adapter]:
    """Adapters in dependency order: the order components are (re)loaded in."""
    from .dovecot import DovecotAdapter
    from .haproxy import HAProxyAdapter
    from .memcached import MemcachedAdapter
    from .nginx import NginxAdapter
    from .opendkim import OpenDKIMAdapter
    from .policy import PolicyAdapter
    from .postfix import PostfixAdapter
    from .sogo import SOGoAdapter

    # the policy server before dovecot (auth policy), OpenDKIM before postfix (its milter)
    ordered = [MemcachedAdapter(), PolicyAdapter(), OpenDKIMAdapter(), DovecotAdapter(), PostfixAdapter(),
               SOGoAdapter(), NginxAdapter(), HAProxyAdapter()]
    return {adapter.name: adapter for adapter in ordered}
