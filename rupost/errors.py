"""Exceptions with messages a mail administrator can act on.

Faces (CLI, wizard, panel) turn them into exit codes or flash messages; nothing
below the faces prints.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .deploy.pipeline import DeployOutcome


class RuPostError(Exception):
    """Base class: the message is shown to the administrator as is."""


class ConfigError(RuPostError):
    """The node configuration (config.json) is missing or invalid."""


class DatabaseError(RuPostError):
    """The database cannot be reached or refused the request."""


class ValidationError(RuPostError):
    """Input (a name, an address, a template, a parameter) is invalid."""


class NotFoundError(RuPostError):
    """The named object does not exist."""


class ConflictError(RuPostError):
    """The object already exists or is in use."""


class TemplateError(ValidationError):
    """A configuration template is invalid; the message names the key path."""


class ComponentCheckError(RuPostError):
    """A component's own checker rejected the rendered configuration."""

    def __init__(self, component: str, message: str):
        super().__init__(f"{component}: configuration check failed: {message}")
        self.component = component
        self.detail = message


class DeployError(RuPostError):
    """A deploy step failed; the message says which and what was done about it."""

    outcome: DeployOutcome | None = None  # with every step, when the pipeline got that far


class PermissionDeniedError(RuPostError):
    """The actor may not act on this (a domain administrator outside their domains)."""


class ServiceError(RuPostError):
    """A daemon could not be started, stopped or reloaded."""
