"""Configuration templates: load, validate, render (SPEC §3)."""
from .document import TemplateDocument, load_document, builtin_dir, builtin_documents  # noqa: F401
from .render import render_components  # noqa: F401
