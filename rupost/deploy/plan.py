"""A plan: the files a template renders to, their hashes, and what differs from the live node."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from adapters import ComponentRegistry, NodeData, RenderContext, RenderedFile
from adapters.haproxy_db import LOOKUP_ADDRESSES

from ..config import NodeConfig
from ..db import endpoints
from ..errors import TemplateError
from ..paths import Layout
from ..templating import errors as schema_errors
from ..templating import render_components
from ..templating.document import TemplateDocument
from ..templating.limits import check_chain, declares_load

TLS = "tls"  # the pseudo-component of the node's certificate, key and DH parameters


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class TLSMaterial:
    cert_pem: str
    key_pem: str
    dhparam_pem: str

    def files(self) -> list[RenderedFile]:
        return [RenderedFile("mail.crt", self.cert_pem), RenderedFile("mail.key", self.key_pem, mode=0o600),
                RenderedFile("dhparam.pem", self.dhparam_pem)]


@dataclass
class Plan:
    template: str
    version: str
    parameters: dict
    files: dict[str, list[RenderedFile]]  # component -> files (token form)
    hashes: dict[str, dict[str, str]]
    changed: list[str]  # components whose files differ from the live generation
    current_generation: int | None
    diffs: dict[str, str] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)  # components whose checker passed on these files

    @property
    def has_changes(self) -> bool:
        return bool(self.changed)

    @property
    def digest(self) -> str:
        """Names this plan: what it would write over which live generation. A face that showed
        a plan applies it only if a fresh plan has the same digest."""
        return sha256(json.dumps([self.template, self.version, self.parameters, self.hashes,
                                  self.current_generation], sort_keys=True, default=str))


def render_context(layout: Layout, node: NodeConfig, generation_dir: Path,
                   data: NodeData | None = None) -> RenderContext:
    lookup = endpoints.lookup_database(node)
    spares = LOOKUP_ADDRESSES[1:] if endpoints.is_ha(node.database) else ()
    return RenderContext(layout, node, endpoints.daemon_database(node), generation_dir, data, lookup=lookup,
                         lookup_spares=spares)


def build_models(components: ComponentRegistry, doc: TemplateDocument, context: dict) -> dict:
    """Each component's section of the template, rendered and checked against its adapter's schema."""
    models = render_components(doc.data["components"], context)
    problems: list[str] = []
    for name, adapter in components.items():
        section_problems = schema_errors.validate(models[name], adapter.schema, f"components.{name}")
        if not section_problems:
            section_problems = adapter.check_model(models[name])
        problems += section_problems
    if not problems and declares_load(doc.parameter_specs):
        # the limits of every component against the load the parameters describe, across
        # components: a daemon holding fewer sessions than HAProxy admits drops them silently
        problems += check_chain(context["parameters"], models)
    schema_errors.raise_if(problems, f"template {doc.name} {doc.version}")
    return models


def render_files(components: ComponentRegistry, models: dict, ctx: RenderContext,
                 tls: TLSMaterial) -> dict[str, list[RenderedFile]]:
    files: dict[str, list[RenderedFile]] = {TLS: tls.files()}
    for name, adapter in components.items():
        try:
            files[name] = adapter.render(models[name], ctx)
        except ValueError as exc:
            raise TemplateError(f"components.{name}: {exc}") from None
    return files
