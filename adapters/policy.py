"""The RuPost policy server (rupost/policy/server.py): dovecot's auth policy endpoint,
the webmail login guard for nginx and postfix's outbound rate limit, all backed by the
block list and counters shared by every node in the ``rupost`` database.

It has no native configuration language: we render its settings as JSON."""
from __future__ import annotations

import grp
import ipaddress
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rupost.errors import ComponentCheckError
from rupost.paths import Layout

from .base import Adapter, ProcessSpec, RenderContext, RenderedFile, listen_schema, split_listen

_SECONDS = {"type": "integer", "minimum": 1, "maximum": 30 * 86400}

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "listen": listen_schema(),
        # postfix's check_policy_service socket (outbound rate limit); empty: none
        "postfix_socket": {"type": "string", "pattern": r"^(/[^\s]*)?$"},
        # where the webmail login is relayed after the block-list check
        "sogo_upstream": {"anyOf": [listen_schema(), {"const": ""}]},
        "limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enabled": {"type": "boolean"},
                "ip_failures": {"type": "integer", "minimum": 0, "maximum": 100000},
                "account_failures": {"type": "integer", "minimum": 0, "maximum": 100000},
                "window": _SECONDS,
                "block_time": _SECONDS,
                "exempt": {"type": "array", "items": {"type": "string", "pattern": r"^[0-9A-Fa-f.:]+(/\d{1,3})?$"}},
            },
        },
        "sender_rate": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"limit": {"type": "integer", "minimum": 0}, "window": _SECONDS},
        },
    },
}

# Webmail's own IMAP and SMTP connections reach dovecot and postfix from the loopback
# address without the PROXY protocol: blocking it would lock every webmail user out.
# Real clients always arrive with their own address (HAProxy -> PROXY protocol).
INTERNAL_HOPS = ("127.0.0.1/32", "::1/128")


@dataclass
class Limits:
    enabled: bool = True
    ip_failures: int = 10
    account_failures: int = 30
    window: int = 600  # seconds
    block_time: int = 900  # seconds
    exempt: list[str] = field(default_factory=list)  # client networks never blocked (CIDR)

    def is_exempt(self, ip: str) -> bool:
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        for net in (*INTERNAL_HOPS, *self.exempt):
            try:
                if address in ipaddress.ip_network(net, strict=False):
                    return True
            except ValueError:
                continue
        return False


# The report endpoints (/dovecot, /impersonation) answer only requests carrying this header
# with the node's secret: any local process could otherwise block accounts with forged
# failures or journal forged impersonation uses.
API_HEADER = "X-RuPost-Policy"
API_HEADER_GROUP = "dovecot"  # dovecot's auth process and its post-login script send it


def api_header_file(layout: Layout) -> Path:
    return layout.state / "policy" / "api-header"


def ensure_api_header(layout: Layout) -> Path:
    """The node's secret header line, created once (0640, root and group dovecot). It stays
    outside the generations: dovecot reads it through `<file` and curl through `-H @file`,
    so no rendered file and no command line holds it."""
    path = api_header_file(layout)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{API_HEADER}: {secrets.token_urlsafe(32)}")
    try:
        os.chown(tmp, 0, grp.getgrnam(API_HEADER_GROUP).gr_gid)
        os.chmod(tmp, 0o640)
    except KeyError:  # no dovecot on this machine: root alone
        pass
    os.replace(tmp, path)
    return path


def read_api_secret(layout: Layout) -> str:
    return ensure_api_header(layout).read_text().partition(":")[2].strip()


class PolicyAdapter(Adapter):
    name = "policy"
    optional_section = True
    schema = SCHEMA

    def check_model(self, model: dict) -> list[str]:
        problems = []
        for i, net in enumerate((model.get("limits") or {}).get("exempt", [])):
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                problems.append(f"components.policy.limits.exempt[{i}]: {net!r} is not an address or network")
        return problems

    def render(self, model: dict, ctx: RenderContext) -> list[RenderedFile]:
        listen = model.get("listen") or f"127.0.0.1:{ctx.node.port('auth_policy')}"
        config = {"listen": listen, "postfix_socket": model.get("postfix_socket", ""),
                  "postfix_socket_group": "postfix",
                  # the role it logs in as (its password stays in the database): a rotation changes
                  # this file, so the deploy restarts the server with the new login
                  "database_login": ctx.consumer_database("policy").user,
                  "sogo_upstream": model.get("sogo_upstream", ""), "limits": model.get("limits") or {},
                  "sender_rate": model.get("sender_rate") or {}}
        return [RenderedFile("policy.json", json.dumps(config, indent=2, sort_keys=True) + "\n")]

    def validate(self, config_dir: Path, ctx: RenderContext) -> None:
        try:
            config = json.loads((config_dir / "policy.json").read_text())
            Limits(**config["limits"])
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ComponentCheckError(self.name, f"policy.json: {exc}") from None

    @staticmethod
    def _prepare(ctx: RenderContext) -> None:
        ctx.layout.run_dir("policy").mkdir(parents=True, exist_ok=True)
        ensure_api_header(ctx.layout)

    def process(self, ctx: RenderContext) -> ProcessSpec:
        conf = ctx.config_dir(self.name) / "policy.json"
        try:
            listen = json.loads(conf.read_text())["listen"]
        except (OSError, ValueError, KeyError):
            listen = f"127.0.0.1:{ctx.node.port('auth_policy')}"
        host, port = split_listen(listen)
        return ProcessSpec(
            argv=[sys.executable, "-m", "rupost.policy", "--root", str(ctx.layout.root), "--config", str(conf)],
            env={"PYTHONUNBUFFERED": "1"},
            reload="restart",
            prepare=lambda: self._prepare(ctx),
            ports=[(host if host not in ("*", "0.0.0.0") else "127.0.0.1", port)],
            stop_timeout=5.0,
        )
