"""Configuration templates in the database: builtin ones loaded at install, one active."""
from __future__ import annotations

import builtins
import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from rupost.templating import builtin_documents, load_document
from rupost.templating.document import TemplateDocument

from ..db.models import Template
from ..deploy.plan import build_models
from ..errors import ConflictError, NotFoundError, TemplateError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from . import Services

DEFAULT_TEMPLATE = "standard"


class TemplateService:
    def __init__(self, app: Services) -> None:
        self.app = app

    def load_builtin(self) -> list[str]:
        """Insert or refresh the shipped builtin templates; activate `standard` if none is active."""
        loaded = []
        with self.app.dbs.session("main") as s:
            for doc in builtin_documents():
                row = s.scalar(select(Template).where(Template.name == doc.name, Template.version == doc.version))
                if row is None:
                    s.add(Template(name=doc.name, version=doc.version, kind="builtin", description=doc.description,
                                   body=doc.text, sha256=doc.sha256, active=False))
                elif row.kind == "builtin" and row.sha256 != doc.sha256:
                    row.body, row.sha256, row.description = doc.text, doc.sha256, doc.description
                loaded.append(f"{doc.name}@{doc.version}")
            s.flush()
            if s.scalar(select(Template.id).where(Template.active)) is None:
                newest = s.scalars(select(Template).where(Template.name == DEFAULT_TEMPLATE)
                                   .order_by(Template.id.desc())).first()
                if newest is not None:
                    newest.active = True
        return loaded

    def list(self) -> list[dict]:
        with self.app.dbs.session("main") as s:
            return [{"name": t.name, "version": t.version, "kind": t.kind, "active": t.active,
                     "extends": t.extends, "description": t.description, "sha256": t.sha256}
                    for t in s.scalars(select(Template).order_by(Template.name, Template.id))]

    def _row(self, s: Session, name: str, version: str | None) -> Template:
        query = select(Template).where(Template.name == name)
        if version:
            query = query.where(Template.version == version)
        row = s.scalars(query.order_by(Template.id.desc())).first()
        if row is None:
            raise NotFoundError(f"template {name}{'@' + version if version else ''} does not exist")
        return row

    def show(self, name: str, version: str | None = None) -> dict:
        with self.app.dbs.session("main") as s:
            row = self._row(s, name, version)
            return {"name": row.name, "version": row.version, "kind": row.kind, "active": row.active,
                    "body": row.body}

    @staticmethod
    def _document(row: Template) -> TemplateDocument:
        doc = load_document(row.resolved or row.body, f"{row.name}@{row.version}")
        doc.original, doc.extends = (row.body if row.resolved else None), row.extends
        return doc

    def get(self, name: str, version: str | None = None) -> TemplateDocument:
        with self.app.dbs.session("main") as s:
            return self._document(self._row(s, name, version))

    def active(self) -> TemplateDocument:
        with self.app.dbs.session("main") as s:
            row = s.scalar(select(Template).where(Template.active))
            if row is None:
                raise NotFoundError("no configuration template is active (run rupost-wizard to load the builtin ones)")
            return self._document(row)

    def activate(self, name: str, version: str | None = None) -> None:
        self.app.require_superadmin("activating a template")  # the next deploy runs it on every node
        with self.app.dbs.session("main") as s:
            row = self._row(s, name, version)
            self._document(row)
            s.execute(update(Template).values(active=False))
            row.active = True
        self.app.audit.record("template.activate", f"{name}@{row.version}")

    # ---------------------------------------------------------- custom templates
    def validate(self, text: str, source: str = "<template>") -> TemplateDocument:
        """Every check short of the component checkers: YAML shape and size, the
        document schema, `extends:`, parameters, sandboxed rendering against this
        node's context and each component's schema. Stores nothing."""
        doc = load_document(text, source, resolve_base=self._resolve_base)
        if doc.builtin:
            raise TemplateError(f"{source}: metadata.builtin: only templates shipped with RuPost are builtin")
        params = doc.resolve_parameters({})
        build_models(self.app.adapters, doc, self.app.deploys.template_context(params))
        return doc

    def _resolve_base(self, name: str, version: str | None) -> TemplateDocument:
        try:
            return self.get(name, version)
        except NotFoundError:
            raise TemplateError(f"extends: template {name}{'@' + version if version else ''} does not exist") \
                from None

    def import_text(self, text: str, source: str = "<template>") -> dict:
        """Store a custom template. A template is code run on every node once activated and
        deployed (its raw snippets are native configuration passed through, postfix's master
        services name commands): a superadministrator's action, journaled with the key path of
        every raw snippet it carries."""
        self.app.require_superadmin("importing a template")
        doc = self.validate(text, source)
        snippets = raw_snippets(doc)
        with self.app.dbs.session("main") as s:
            if s.scalar(select(Template.id).where(Template.name == doc.name, Template.kind == "builtin")):
                raise ConflictError(f"{doc.name} is the name of a builtin template; choose another name")
            if s.scalar(select(Template.id).where(Template.name == doc.name, Template.version == doc.version)):
                raise ConflictError(f"template {doc.name}@{doc.version} already exists; versions are immutable, "
                                    "import it with a new metadata.version")
            s.add(Template(name=doc.name, version=doc.version, kind="custom", description=doc.description,
                           body=doc.original or doc.text, resolved=doc.text if doc.original else None,
                           extends=doc.extends, sha256=doc.sha256, active=False, imported_by=self.app.actor))
        self.app.audit.record("template.import", f"{doc.name}@{doc.version}", extends=doc.extends,
                              sha256=doc.sha256, raw_snippets=snippets)
        return {"name": doc.name, "version": doc.version, "extends": doc.extends, "raw_snippets": snippets}

    def export(self, name: str, version: str | None = None) -> str:
        return self.show(name, version)["body"]

    def diff(self, a: str, b: str) -> str:
        """Unified diff of the full (resolved) documents of two NAME[@VERSION] references."""
        docs = []
        for ref in (a, b):
            name, _, version = ref.partition("@")
            docs.append(self.get(name, version or None))
        return "".join(difflib.unified_diff(docs[0].text.splitlines(True), docs[1].text.splitlines(True),
                                            f"{docs[0].name}@{docs[0].version}", f"{docs[1].name}@{docs[1].version}"))

    def remove(self, name: str, version: str | None = None) -> None:
        with self.app.dbs.session("main") as s:
            row = self._row(s, name, version)
            if row.kind == "builtin":
                raise ConflictError(f"{name}@{row.version} is builtin and cannot be removed")
            if row.active:
                raise ConflictError(f"{name}@{row.version} is the active template; activate another one first")
            s.delete(row)
            version = row.version
        self.app.audit.record("template.remove", f"{name}@{version}")

    def parameters(self) -> builtins.list[dict]:
        """Declared parameters of the active template with their current values."""
        from .settings import TEMPLATE_PARAMETERS

        doc = self.active()
        values = self.app.settings.get(TEMPLATE_PARAMETERS, {}) or {}
        return [{"name": name, "type": spec["type"], "value": values.get(name, spec["default"]),
                 "default": spec["default"], "set": name in values, "description": spec.get("description", "")}
                for name, spec in doc.parameter_specs.items()]

    def set_parameters(self, updates: dict, unset: Sequence[str] = ()) -> dict:
        """Validate against the active template before storing; nothing is stored on error."""
        from .settings import TEMPLATE_PARAMETERS

        values = dict(self.app.settings.get(TEMPLATE_PARAMETERS, {}) or {})
        values.update(updates)
        for name in unset:
            values.pop(name, None)
        doc = self.active()
        resolved = doc.resolve_parameters(values)
        # the whole template against the new values (the chain of limits of max_*_sessions
        # among them), so a value that would fail the next deploy is never stored
        build_models(self.app.adapters, doc, self.app.deploys.template_context(resolved))
        self.app.settings.set(TEMPLATE_PARAMETERS, values)
        changed = {name: values.get(name) for name in [*updates, *unset]}
        self.app.audit.record("template.parameters", f"{doc.name}@{doc.version}", changed=changed)
        return values


# Keys whose text reaches a daemon's configuration as written, past every schema: native
# configuration appended to a component's files, static postfix tables, global Sieve scripts.
RAW_SNIPPET_KEYS = ("extra", "tables", "sieve_scripts")


def raw_snippets(doc: TemplateDocument) -> builtins.list[str]:
    """The key paths of the raw snippets this template itself brings (with `extends:`, those
    of the document as written, not of the builtin it extends)."""
    import yaml

    own = yaml.safe_load(doc.original) if doc.original else doc.data  # validated already
    found = []
    for component, section in sorted(((own or {}).get("components") or {}).items()):
        for key in RAW_SNIPPET_KEYS:
            value = section.get(key) if isinstance(section, dict) else None
            if isinstance(value, dict):
                found += [f"components.{component}.{key}.{name}" for name, text in sorted(value.items()) if text]
            elif value:
                found.append(f"components.{component}.{key}")
    return found
