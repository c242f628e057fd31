"""Nginx: TLS termination for IMAPS, SMTPS and the web (webmail, CalDAV/CardDAV).

Every listener accepts the PROXY protocol from HAProxy, and the mail listeners
pass the client address on to postfix/dovecot with the PROXY protocol again, so
the real client IP reaches the daemons' logs and policies.
"""
from __future__ import annotations

import socket
from pathlib import Path

import jinja2

from .base import (
    Adapter,
    LogReopen,
    Probe,
    ProcessSpec,
    RenderContext,
    RenderedFile,
    extra_block,
    listen_schema,
    snippet_schema,
)
from .probes import probe_https

SOGO_STATIC = "/usr/lib/GNUstep/SOGo/WebServerResources"
STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"

# the adapters' text templates (shipped with the package: setup.cfg [options.package_data])
_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                                autoescape=False, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                trim_blocks=True, lstrip_blocks=True)

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["tls", "mail_proxies", "web"],
    "properties": {
        "worker_processes": {"type": ["string", "integer"], "pattern": r"^(auto|\d+)$"},
        "worker_connections": {"type": "integer", "minimum": 64},
        "worker_rlimit_nofile": {"type": "integer", "minimum": 64},
        # stream servers that answer a client HAProxy refuses beyond a listener's max_sessions
        # (BYE, 421, 503) and close: `listen` host:port or unix:/path, `tls` as the public port
        # speaks, `answer` the protocol's refusal (CRLF added)
        "refusals": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "listen", "answer"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9_-]+$"},
                    "listen": {"anyOf": [listen_schema(), {"type": "string", "pattern": r"^unix:/[^\s;]+$"}]},
                    "tls": {"type": "boolean"},
                    # lines, each sent with CRLF; no backslash or $ (nginx escapes and variables)
                    "answer": {"type": "array", "minItems": 1,
                               "items": {"type": "string", "pattern": r"^[^\\\r\n$]*$"}},
                },
            },
        },
        "extra": {"type": "object", "additionalProperties": False,
                  "properties": {"main": snippet_schema(), "stream": snippet_schema(), "http": snippet_schema(),
                                 "https_server": snippet_schema()}},
        "trusted_proxies": {"type": "array", "items": {"type": "string"}},
        "tls": {
            "type": "object",
            "additionalProperties": False,
            "required": ["protocols", "ciphers"],
            "properties": {
                "protocols": {"type": "array", "items": {"enum": ["TLSv1.2", "TLSv1.3"]}, "minItems": 1},
                "ciphers": {"type": "string", "pattern": r"^[A-Za-z0-9:+!_-]+$"},
                "session_timeout": {"type": "string", "pattern": r"^\d+[smhd]?$"},
                # server cipher order: testssl.sh rates a server without one HIGH
                "prefer_server_ciphers": {"type": "boolean"},
            },
        },
        "mail_proxies": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "listen", "upstream"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9_-]+$"},
                    "listen": listen_schema(),
                    "upstream": listen_schema(),
                    "timeout": {"type": "string", "pattern": r"^\d+[smhd]?$"},
                },
            },
        },
        "web": {
            "type": "object",
            "additionalProperties": False,
            "required": ["listen_https", "listen_http", "server_name", "sogo_upstream"],
            "properties": {
                "listen_https": listen_schema(),
                "listen_http": listen_schema(),
                "public_https_port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "server_name": {"type": "string", "pattern": r"^[A-Za-z0-9.*_-]+$"},
                "hsts_max_age": {"type": "integer", "minimum": 0},
                "client_max_body_size": {"type": "integer", "minimum": 0},
                "sogo_upstream": listen_schema(),
                "sogo_workers_timeout": {"type": "string"},
                # the policy server (host:port) SOGo's login is relayed through: blocked client
                # addresses/accounts are refused and failed logins recorded; "" = SOGo directly
                "login_guard": {"anyOf": [listen_schema(), {"const": ""}]},
                # client autoconfiguration (Thunderbird, Outlook, Apple) proxied to the core's
                # unix socket <root>/run/rupost/autoconfig.sock (`rupost autoconfig serve`)
                "autoconfig": {"type": "boolean"},
            },
        },
    },
}


def render_nginx_conf(model: dict, ctx: RenderContext) -> str:
    """nginx.conf from templates/nginx.conf.j2; the paths and the extra snippets' lines are
    worked out here, the rest (defaults included) is in the template."""
    extra = model.get("extra") or {}
    return _TEMPLATES.get_template("nginx.conf.j2").render(
        model=model,
        web=model["web"],
        run=ctx.layout.run_dir("nginx"),
        logs=ctx.layout.logs,
        tls_dir=ctx.tls_dir,
        stream_module=STREAM_MODULE,
        sogo_static=SOGO_STATIC,
        trusted_proxies=model.get("trusted_proxies", ["127.0.0.1"]),
        autoconfig=bool(model["web"].get("autoconfig")),
        autoconfig_socket=ctx.layout.run / "autoconfig.sock",
        extra={part: extra_block(extra.get(part)) for part in ("main", "stream", "http", "https_server")},
    )


def remove_stale_sockets(directory: Path) -> list[Path]:
    """Unlink the Unix sockets in `directory` that nobody listens on. nginx unlinks its sockets
    when it exits, not when it is killed, and will not bind over one that is left: after a
    SIGKILL its next start failed with "Address already in use". A socket some process still
    accepts on is kept (a start called while nginx runs changes nothing)."""
    removed = []
    for path in sorted(directory.glob("*.sock")):
        if not path.is_socket():
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink(missing_ok=True)
                removed.append(path)
            except OSError:
                pass  # busy or unreadable: not ours to judge
    return removed


class NginxAdapter(Adapter):
    name = "nginx"
    reads_tls = True
    in_mail_unit = True
    log_reopen = LogReopen.SIGUSR1
    probes = (Probe(probe_https, "https"),)
    schema = SCHEMA

    def render(self, model: dict, ctx: RenderContext) -> list[RenderedFile]:
        return [RenderedFile("nginx.conf", render_nginx_conf(model, ctx))]

    def _prepare_dirs(self, ctx: RenderContext) -> None:
        ctx.layout.run_dir(self.name).mkdir(parents=True, exist_ok=True)
        ctx.layout.logs.mkdir(parents=True, exist_ok=True)

    def _before_start(self, ctx: RenderContext) -> None:
        self._prepare_dirs(ctx)
        remove_stale_sockets(ctx.layout.run_dir(self.name))

    def validate(self, config_dir: Path, ctx: RenderContext) -> None:
        self._prepare_dirs(ctx)
        self.run_checker(["nginx", "-t", "-q", "-p", str(ctx.layout.run_dir(self.name)),
                          "-c", str(config_dir / "nginx.conf")])

    def process(self, ctx: RenderContext) -> ProcessSpec:
        return ProcessSpec(
            argv=["nginx", "-p", str(ctx.layout.run_dir(self.name)), "-c",
                  str(ctx.config_dir(self.name) / "nginx.conf"), "-g", "daemon off;"],
            reload="hup",
            prepare=lambda: self._before_start(ctx),
            ports=[("127.0.0.1", ctx.node.port("nginx_https")), ("127.0.0.1", ctx.node.port("nginx_imaps"))],
        )
