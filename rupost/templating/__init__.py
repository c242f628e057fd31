"""Configuration templates: load, validate, render (SPEC §3)."""
from .document import TemplateDocument, builtin_dir, builtin_documents, load_document  # noqa: F401
from .render import render_components  # noqa: F401
