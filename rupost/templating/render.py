"""Evaluate the Jinja2 expressions in a template's component sections.

Rendering is sandboxed with StrictUndefined: a template cannot reach Python
internals, and an unknown name is an error naming the key path, never an empty
string that would silently produce a broken configuration.
"""
from __future__ import annotations

import re

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import TemplateError

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                     keep_trailing_newline=True)
_WHOLE_EXPRESSION = re.compile(r"^\{\{(.*)\}\}$", re.S)


def _render_string(value: str, context: dict, path: str):
    if "{{" not in value and "{%" not in value:
        return value
    try:
        whole = _WHOLE_EXPRESSION.match(value.strip())
        if whole and "{{" not in whole.group(1) and "}}" not in whole.group(1):
            # a value that is one expression keeps its type (an int stays an int)
            result = _ENV.compile_expression(whole.group(1), undefined_to_none=False)(**context)
            if isinstance(result, jinja2.Undefined):
                str(result)  # raises UndefinedError with the name
            return result
        return _ENV.from_string(value).render(**context)
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{path}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"{path}: template expression error: {exc}") from None
    except Exception as exc:  # a filter or test raised on bad data
        raise TemplateError(f"{path}: cannot evaluate {value!r}: {exc}") from None


def render_value(value, context: dict, path: str):
    if isinstance(value, str):
        return _render_string(value, context, path)
    if isinstance(value, dict):
        return {k: render_value(v, context, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def render_components(components: dict, context: dict) -> dict:
    return {name: render_value(section, context, f"components.{name}") for name, section in components.items()}
