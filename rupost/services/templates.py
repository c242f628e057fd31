"""Configuration templates in the database: builtin ones loaded at install, one active."""
from __future__ import annotations

from sqlalchemy import select, update

from ..db.models import Template
from ..errors import NotFoundError
from ..templates import builtin_documents, load_document
from ..templates.document import TemplateDocument

DEFAULT_TEMPLATE = "standard"


class TemplateService:
    def __init__(self, app):
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
                     "description": t.description, "sha256": t.sha256}
                    for t in s.scalars(select(Template).order_by(Template.name, Template.id))]

    def _row(self, s, name: str, version: str | None) -> Template:
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

    def active(self) -> TemplateDocument:
        with self.app.dbs.session("main") as s:
            row = s.scalar(select(Template).where(Template.active))
            if row is None:
                raise NotFoundError("no configuration template is active (run rupost-wizard to load the builtin ones)")
            return load_document(row.body, f"{row.name}@{row.version}")

    def activate(self, name: str, version: str | None = None) -> None:
        with self.app.dbs.session("main") as s:
            row = self._row(s, name, version)
            load_document(row.body, f"{row.name}@{row.version}")
            s.execute(update(Template).values(active=False))
            row.active = True
        self.app.audit.record("template.activate", f"{name}@{version or 'latest'}")

    def parameters(self) -> list[dict]:
        """Declared parameters of the active template with their current values."""
        from .settings import TEMPLATE_PARAMETERS

        doc = self.active()
        values = self.app.settings.get(TEMPLATE_PARAMETERS, {}) or {}
        return [{"name": name, "type": spec["type"], "value": values.get(name, spec["default"]),
                 "default": spec["default"], "set": name in values, "description": spec.get("description", "")}
                for name, spec in doc.parameter_specs.items()]

    def set_parameters(self, updates: dict, unset: list[str] = ()) -> dict:
        """Validate against the active template before storing; nothing is stored on error."""
        from .settings import TEMPLATE_PARAMETERS

        values = dict(self.app.settings.get(TEMPLATE_PARAMETERS, {}) or {})
        values.update(updates)
        for name in unset:
            values.pop(name, None)
        self.active().resolve_parameters(values)
        self.app.settings.set(TEMPLATE_PARAMETERS, values)
        return values
