"""Turn jsonschema errors into one line per problem, each with its key path."""
from __future__ import annotations

import re

import jsonschema

from ..errors import TemplateError


def key_path(prefix: str, parts) -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe(error: jsonschema.ValidationError, prefix: str) -> list[str]:
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        extras = re.findall(r"'([^']+)'", error.message.split("(")[-1]) or ["?"]
        allowed = sorted((error.schema.get("properties") or {}).keys())
        hint = f" (known keys: {', '.join(allowed)})" if allowed and len(allowed) <= 25 else ""
        return [f"{key_path(prefix, path + [extra])}: unknown key{hint}" for extra in extras]
    if error.validator == "required":
        missing = re.findall(r"'([^']+)' is a required property", error.message)
        return [f"{key_path(prefix, path + [m])}: required key is missing" for m in missing] or [
            f"{key_path(prefix, path)}: {error.message}"]
    where = key_path(prefix, path) or prefix or "(document)"
    return [f"{where}: {error.message}"]


def validate(instance, schema: dict, prefix: str) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    problems: list[str] = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        problems.extend(describe(error, prefix))
    return problems


def raise_if(problems: list[str], what: str) -> None:
    if problems:
        raise TemplateError(f"{what}:\n  " + "\n  ".join(problems) if len(problems) > 1 else f"{what}: {problems[0]}")
