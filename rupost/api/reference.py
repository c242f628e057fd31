"""The API's reference in Markdown, rendered from the OpenAPI description (docs/api.md).

``scripts/api-reference`` rewrites the part of docs/api.md between the two markers below;
tests/test_api_reference.py fails when that part differs from what the code describes."""
from __future__ import annotations

import json

BEGIN = "<!-- BEGIN GENERATED REFERENCE (scripts/api-reference) -->"
END = "<!-- END GENERATED REFERENCE -->"


def description() -> dict:
    """The OpenAPI description as /api/v1/openapi.json serves it (no database needed)."""
    from flask import Flask

    from . import install

    app = Flask("rupost-api-reference")
    return install(app).spec.to_dict()


def _schema_text(schema: dict, components: dict) -> str:
    if "$ref" in schema:
        return f"`{schema['$ref'].rsplit('/', 1)[-1]}`"
    kind = schema.get("type", "object")
    if kind == "array":
        return f"array of {_schema_text(schema.get('items', {}), components)}"
    if isinstance(kind, list):
        kind = " or ".join(kind)
    extras = []
    if "enum" in schema:
        extras.append("one of " + ", ".join(f"`{v}`" for v in schema["enum"]))
    if "minimum" in schema or "maximum" in schema:
        extras.append(f"{schema.get('minimum', '')}..{schema.get('maximum', '')}")
    if "maxLength" in schema:
        extras.append(f"max {schema['maxLength']} chars")
    if "default" in schema:
        extras.append(f"default `{json.dumps(schema['default'])}`")
    return kind + (f" ({'; '.join(extras)})" if extras else "")


def _operation(method: str, path: str, op: dict, components: dict) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary") or op.get("description"):
        lines += [" ".join(filter(None, [op.get("summary"), op.get("description")])).strip(), ""]
    params = op.get("parameters", [])
    if params:
        lines += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
        for p in params:
            lines.append(f"| `{p['name']}` | {p['in']} | {_schema_text(p.get('schema', {}), components)} | "
                         f"{'yes' if p.get('required') else 'no'} | {p.get('description', '')} |")
        lines.append("")
    body = op.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        lines += [f"Request body ({media}): {_schema_text(content.get('schema', {}), components)}", ""]
    answers = []
    for status, response in op.get("responses", {}).items():
        if "$ref" in response:
            continue
        content = response.get("content", {})
        shape = ", ".join(f"{_schema_text(c.get('schema', {}), components)}" for c in content.values())
        answers.append(f"`{status}` {response.get('description', '')}" + (f": {shape}" if shape else ""))
    lines += ["Answers: " + "; ".join(answers) + "; otherwise a problem (see Conventions).", ""]
    return lines


def _schemas(components: dict) -> list[str]:
    lines = ["## Schemas", ""]
    for name, schema in sorted(components.get("schemas", {}).items()):
        lines += [f"### `{name}`", "", "| field | type | required |", "|---|---|---|"]
        required = set(schema.get("required", []))
        for field, spec in schema.get("properties", {}).items():
            flags = []
            if spec.get("readOnly"):
                flags.append("read-only")
            if spec.get("writeOnly"):
                flags.append("write-only")
            lines.append(f"| `{field}` | {_schema_text(spec, components)}{' ' + ', '.join(flags) if flags else ''} "
                         f"| {'yes' if field in required else 'no'} |")
        lines.append("")
    return lines


def render(spec: dict) -> str:
    components = spec.get("components", {})
    lines = [BEGIN, "", f"OpenAPI {spec['openapi']}; every operation needs `Authorization: Bearer <token>`.", "",
             "## Operations", ""]
    for path, item in spec["paths"].items():
        shared = item.get("parameters", [])
        for method in ("get", "post", "put", "patch", "delete"):
            if method in item:
                op = dict(item[method])
                op["parameters"] = shared + op.get("parameters", [])
                lines += _operation(method, path, op, components)
    lines += _schemas(components)
    lines.append(END)
    return "\n".join(lines) + "\n"


def update(document: str, spec: dict) -> str:
    """`document` with its generated part replaced by the reference of `spec`."""
    head, found, rest = document.partition(BEGIN)
    if not found:
        return document.rstrip("\n") + "\n\n" + render(spec)
    _, _, tail = rest.partition(END)
    return head + render(spec).rstrip("\n") + tail
