"""PostSRSd (Debian's postsrsd 1.x): the Sender Rewriting Scheme for forwarded mail.

It serves two postfix tcp_table(5) lookups on loopback: *forward* rewrites an envelope
sender to an address of the SRS domain (``SRS0=HASH=TT=example.org=alice@MAILHOST``), so
a forward leaves with a sender this node may use and passes SPF at the receiver;
*reverse* turns such an address back into the original one, only when its signature
and time stamp are valid, so a bounce to it reaches the original sender.

postsrsd has no configuration file: its options are rendered one per line into
``postsrsd.args`` and become its command line. Its secrets (the first signs, all verify)
are the cluster's, kept in the database (rupost.services.srs) so every node signs and
verifies the same addresses; they are written to a 0600 file owned by ``postsrsd`` in the
node's state directory before each start, never into a generation.
"""
from __future__ import annotations

import ipaddress
import os
import pwd
from pathlib import Path

from rupost.errors import ComponentCheckError, ServiceError

from .base import Adapter, Probe, ProcessSpec, RenderContext, RenderedFile
from .probes import probe_srs_forward

SRS_USER = "postsrsd"
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = rf"^{_LABEL}(\.{_LABEL})+$"
# the SRS domain follows the mail host name, which may be a single label on a node set up with
# --allow-unqualified-host (scripts/quickstart on a machine without a FQDN): such a node still
# forwards; only the bounces of its forwards cannot find their way back
_HOST = rf"^{_LABEL}(\.{_LABEL})*$"

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    # every key has a default (a template from before this component has no section)
    "properties": {
        # the domain of the rewritten addresses: mail to it must reach this cluster (its MX);
        # the builtin template says the mail host name, the same on every node
        "domain": {"type": "string", "pattern": _HOST},
        # both tables listen here; loopback only (check_model)
        "listen": {"type": "string"},
        "forward_port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "reverse_port": {"type": "integer", "minimum": 1, "maximum": 65535},
        # senders in these domains are never rewritten (".example.com": its subdomains)
        "exclude_domains": {"type": "array", "items": {"type": "string", "pattern": r"^\.?" + _DOMAIN[1:]}},
        "separator": {"enum": ["=", "+", "-"]},
        # hash characters in a new address, and the fewest a returning address may carry
        # (lower it first when raising hash_length: addresses stay valid for 21 days)
        "hash_length": {"type": "integer", "minimum": 4, "maximum": 20},
        "hash_minimum": {"type": "integer", "minimum": 4, "maximum": 20},
    },
}


def state_dir(ctx: RenderContext) -> Path:
    return ctx.layout.state / "postsrsd"


def secrets_file(ctx: RenderContext) -> Path:
    return state_dir(ctx) / "secrets"


def ports(model: dict, ctx: RenderContext) -> tuple[int, int]:
    return (int(model.get("forward_port", ctx.node.port("srs_forward"))),
            int(model.get("reverse_port", ctx.node.port("srs_reverse"))))


def postsrsd_args(model: dict, ctx: RenderContext) -> list[str]:
    forward, reverse = ports(model, ctx)
    # postsrsd 1.x parses its options with getopt and optional arguments: each value is
    # attached to its flag ("-X example.com" would be "extra argument on command line")
    args = [f"-d{model.get('domain', ctx.node.fqdn)}", f"-s{secrets_file(ctx)}",
            f"-l{model.get('listen', '127.0.0.1')}", f"-f{forward}", f"-r{reverse}",
            f"-a{model.get('separator', '=')}", f"-n{model.get('hash_length', 4)}",
            f"-N{model.get('hash_minimum', 4)}",
            # it binds its ports as root, then drops to its own user in an empty chroot
            f"-u{SRS_USER}", f"-c{ctx.layout.run_dir('postsrsd')}"]
    if model.get("exclude_domains"):
        args.append("-X" + ",".join(model["exclude_domains"]))
    return args


def write_secrets(path: Path, secrets: list[str]) -> None:
    """One secret a line, the signing one first; readable by postsrsd only."""
    if not secrets or any(not s or "\n" in s for s in secrets):
        raise ComponentCheckError("postsrsd", "the SRS secrets from the database are empty or malformed")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(secrets) + "\n")
    os.chmod(tmp, 0o600)
    try:
        owner = pwd.getpwnam(SRS_USER)
    except KeyError:
        owner = None
    if owner is not None and os.geteuid() == 0:
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
        os.chown(path.parent, owner.pw_uid, owner.pw_gid)
    os.replace(tmp, path)


class PostSRSdAdapter(Adapter):
    name = "postsrsd"
    optional_section = True
    schema = SCHEMA
    # loopback only, so probed there: the forward table must answer with an SRS0 address
    probes = (Probe(probe_srs_forward, "srs_forward", loopback=True),)

    def check_model(self, model: dict) -> list[str]:
        problems = []
        listen = model.get("listen", "127.0.0.1")
        try:
            loopback = ipaddress.ip_address(listen).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            # anyone who can ask the reverse table can relay through the node
            problems.append(f"components.postsrsd.listen: {listen!r} is not a loopback address")
        if "forward_port" in model and model.get("forward_port") == model.get("reverse_port"):
            problems.append("components.postsrsd.reverse_port: the same port as forward_port")
        if model.get("hash_minimum", 4) > model.get("hash_length", 4):
            problems.append("components.postsrsd.hash_minimum: greater than hash_length (new addresses "
                            "would fail their own check)")
        return problems

    def render(self, model: dict, ctx: RenderContext) -> list[RenderedFile]:
        lines = ["# Generated by RuPost: postsrsd's command line, one argument a line. Do not edit.",
                 *postsrsd_args(model, ctx)]
        return [RenderedFile("postsrsd.args", "\n".join(lines) + "\n")]

    @staticmethod
    def read_args_text(text: str) -> list[str]:
        return [line for line in text.splitlines() if line and not line.startswith("#")]

    @classmethod
    def read_args(cls, config_dir: Path) -> list[str]:
        try:
            text = (config_dir / "postsrsd.args").read_text()
        except FileNotFoundError:
            raise ServiceError(f"postsrsd: {config_dir} has no postsrsd.args (a generation from before "
                               "postsrsd was a component: rupost deploy)") from None
        return cls.read_args_text(text)

    def _prepare(self, ctx: RenderContext) -> None:
        ctx.layout.run_dir(self.name).mkdir(parents=True, exist_ok=True)
        if ctx.data is None:
            raise ComponentCheckError(self.name, "no node data to read the SRS secrets from")
        write_secrets(secrets_file(ctx), ctx.data.srs_secrets())

    def validate(self, config_dir: Path, ctx: RenderContext) -> None:
        self.run_checker(["postsrsd", "-v"])  # installed and runnable
        args = self.read_args(config_dir)
        if not any(a.startswith("-s") for a in args) or not any(a.startswith("-d") for a in args):
            raise ComponentCheckError(self.name, "postsrsd.args names no secrets file or no domain")
        if ctx.data is not None and not ctx.data.srs_secrets():
            raise ComponentCheckError(self.name, "the database holds no SRS secret")

    def process(self, ctx: RenderContext) -> ProcessSpec:
        args = self.read_args(ctx.config_dir(self.name))
        listen = next((a[2:] for a in args if a.startswith("-l")), "127.0.0.1")
        ports = [int(a[2:]) for a in args if a.startswith(("-f", "-r"))]
        return ProcessSpec(
            # no -D: it stays in the foreground under the service backend
            argv=["postsrsd", *args],
            # postsrsd 1.x reads its options and secrets only when it starts
            reload="restart",
            prepare=lambda: self._prepare(ctx),
            ports=[(listen, port) for port in ports],
            stop_timeout=5.0,
        )
