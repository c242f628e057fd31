"""A template document: parsing, the document schema and typed parameters."""
from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adapters import ComponentRegistry, all_adapters

from ..errors import TemplateError
from . import errors as schema_errors

PARAMETER_TYPES: dict[str, type[Any]] = {"integer": int, "string": str, "boolean": bool, "list": list}

# Template files are untrusted input: bounded in size and in structure.
MAX_TEMPLATE_BYTES = 256 * 1024
MAX_YAML_NODES = 20_000

# what a parameter's declaration may require of its value
_VALUE_CHECKS: dict[str, Any] = {
    "type": {"enum": sorted(PARAMETER_TYPES)},
    "min": {"type": "integer"},
    "max": {"type": "integer"},
    "enum": {"type": "array"},
    "pattern": {"type": "string"},
}

_DOCUMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "components"],
    "properties": {
        "apiVersion": {"const": "rupost/v1"},
        "extends": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]{0,63}(@\d+\.\d+\.\d+([.+-][0-9A-Za-z.-]+)?)?$"},
        "kind": {"const": "ConfigurationTemplate"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "version"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]{0,63}$"},
                "version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+([.+-][0-9A-Za-z.-]+)?$"},
                "description": {"type": "string"},
                "builtin": {"type": "boolean"},
            },
        },
        "parameters": {
            "type": "object",
            "propertyNames": {"pattern": r"^[a-z][a-z0-9_]{0,63}$"},
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type", "default"],
                "properties": {
                    **_VALUE_CHECKS,
                    "default": {},
                    "description": {"type": "string"},
                    # a list's items, each checked as a value of its own (a list of lists)
                    "items": {"type": "object", "additionalProperties": False, "required": ["type"],
                              "properties": _VALUE_CHECKS},
                },
            },
        },
        "components": {"type": "object"},  # one section per component: document_schema()
    },
}


def document_schema(components: ComponentRegistry) -> dict:
    """The document schema for these components: a section for each, required unless the
    adapter declares it optional."""
    sections = {"type": "object", "additionalProperties": False, "required": list(components.required_sections),
                "properties": {name: {"type": "object"} for name in components}}
    return {**_DOCUMENT_SCHEMA, "properties": {**_DOCUMENT_SCHEMA["properties"], "components": sections}}


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (a silent override is a typo hidden)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass
class TemplateDocument:
    data: dict
    source: str
    text: str  # the full document (after extends: was applied)
    original: str | None = None  # as written, when it extends another template
    extends: str = ""

    @property
    def name(self) -> str:
        return self.data["metadata"]["name"]

    @property
    def version(self) -> str:
        return self.data["metadata"]["version"]

    @property
    def description(self) -> str:
        return self.data["metadata"].get("description", "")

    @property
    def builtin(self) -> bool:
        return bool(self.data["metadata"].get("builtin", False))

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def parameter_specs(self) -> dict:
        return self.data.get("parameters") or {}

    def resolve_parameters(self, values: dict | None) -> dict:
        """Defaults overlaid with the given values, each checked against its declaration."""
        specs = self.parameter_specs
        values = values or {}
        problems = [f"parameters.{name}: unknown parameter (declared: {', '.join(sorted(specs)) or 'none'})"
                    for name in sorted(values) if name not in specs]
        resolved = {}
        for name, spec in specs.items():
            value = values.get(name, spec["default"])
            problem = check_parameter(spec, value)
            if problem:
                problems.append(f"parameters.{name}: {problem}")
            resolved[name] = value
        schema_errors.raise_if(problems, f"template {self.name} {self.version}: invalid parameters")
        return resolved


def check_parameter(spec: dict, value) -> str | None:
    expected = PARAMETER_TYPES[spec["type"]]
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        return f"expected an integer, got {value!r}"
    if not isinstance(value, expected):
        return f"expected {spec['type']}, got {value!r}"
    if "min" in spec and value < spec["min"]:
        return f"{value} is below the minimum {spec['min']}"
    if "max" in spec and value > spec["max"]:
        return f"{value} is above the maximum {spec['max']}"
    if "enum" in spec and value not in spec["enum"]:
        return f"{value!r} is not one of {spec['enum']}"
    if "pattern" in spec:
        from ..user_regex import UserPattern

        # the template author's pattern: compiled and run with a time limit
        pattern = UserPattern(spec["pattern"], "parameter pattern")
        for item in value if isinstance(value, list) else [value]:  # a list's pattern is its items'
            if not isinstance(item, str) or not pattern.fullmatch(item):
                return f"{item!r} does not match {spec['pattern']}"
    for number, item in enumerate(value if "items" in spec else [], 1):
        problem = check_parameter(spec["items"], item)
        if problem:
            return f"item {number}: {problem}"
    return None


def _check_yaml_shape(text: str, source: str) -> None:
    """Refuse anchors/aliases (a "billion laughs" expands exponentially when walked)
    and documents with too many nodes, before anything is constructed."""
    nodes = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                mark = event.start_mark
                assert mark is not None  # the (pure Python) SafeLoader's parser marks every event
                raise TemplateError(f"{source}:{mark.line + 1}:{mark.column + 1}: YAML anchors and aliases are "
                                    "not allowed in templates")
            nodes += isinstance(event, (yaml.ScalarEvent, yaml.MappingStartEvent, yaml.SequenceStartEvent))
            if nodes > MAX_YAML_NODES:
                raise TemplateError(f"{source}: too many YAML nodes (more than {MAX_YAML_NODES})")
    except yaml.YAMLError:
        return  # reported with its line by the loader below


def _parse(text: str, source: str) -> dict:
    if len(text.encode()) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"{source}: template is larger than {MAX_TEMPLATE_BYTES // 1024} KiB")
    _check_yaml_shape(text, source)
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise TemplateError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise TemplateError(f"{source}: a template is a YAML mapping (apiVersion, kind, metadata, ...)")
    return data


def deep_merge(base, overlay):
    """Mappings merge key by key; anything else (lists included) is replaced."""
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = deep_merge(base.get(key), value) if key in base else value
        return merged
    return overlay


def load_document(text: str, source: str = "<template>", resolve_base=None,
                  components: ComponentRegistry | None = None) -> TemplateDocument:
    """Parse and validate a template. `resolve_base(name, version)` returns the
    TemplateDocument an `extends:` names (None: extending is not possible here)."""
    components = all_adapters() if components is None else components
    data = _parse(text, source)
    original, extends = None, ""
    if "extends" in data:
        ref = data["extends"]
        if not isinstance(ref, str) or resolve_base is None:
            raise TemplateError(f"{source}: extends: a template name (NAME or NAME@VERSION) is expected")
        name, _, version = ref.partition("@")
        base = resolve_base(name, version or None)
        if base.extends:
            raise TemplateError(f"{source}: extends: {ref} itself extends {base.extends}; "
                                "extend the builtin template directly")
        overlay = {k: v for k, v in data.items() if k != "extends"}
        merged = deep_merge(base.data, overlay)
        merged["metadata"] = overlay.get("metadata", {})
        original, extends = text, f"{base.name}@{base.version}"
        data, text = merged, yaml.safe_dump(merged, sort_keys=False, allow_unicode=True)
    schema_errors.raise_if(schema_errors.validate(data, document_schema(components), ""),
                           f"{source}: invalid template")
    for name in components.optional_sections:
        data["components"].setdefault(name, {})
    doc = TemplateDocument(data=data, source=source, text=text, original=original, extends=extends)
    for name, spec in doc.parameter_specs.items():
        problem = check_parameter(spec, spec["default"])
        if problem:
            raise TemplateError(f"{source}: parameters.{name}.default: {problem}")
    return doc


def builtin_dir() -> Path:
    """templates/builtin from the source tree, or the copy installed under share/."""
    env = os.environ.get("RUPOST_BUILTIN_TEMPLATES")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "templates" / "builtin",
                   Path(sys.prefix) / "share" / "rupost" / "templates" / "builtin",
                   Path("/usr/share/rupost/templates/builtin")]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise TemplateError("builtin templates not found (looked in: " + ", ".join(map(str, candidates)) + ")")


def builtin_documents() -> list[TemplateDocument]:
    docs = []
    for path in sorted(builtin_dir().glob("*.yaml")):
        docs.append(load_document(path.read_text(), str(path)))
    return docs
