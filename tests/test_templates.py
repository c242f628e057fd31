"""Template documents: schema, typed parameters, sandboxed rendering (no daemons)."""
from __future__ import annotations

import pytest
import yaml

from rupost.errors import TemplateError
from rupost.templating import builtin_documents, load_document, render_components

MINIMAL = """
apiVersion: rupost/v1
kind: ConfigurationTemplate
metadata: {name: t1, version: 1.0.0}
parameters:
  size: {type: integer, default: 10, min: 1, max: 100}
  flag: {type: boolean, default: true}
  tz: {type: string, default: UTC, pattern: '^[A-Za-z/_]+$'}
  groups: {type: list, default: [], items: {type: list, pattern: '^[a-z.]+$'}}
components: {memcached: {}, dovecot: {}, postfix: {}, sogo: {}, nginx: {}, haproxy: {}}
"""


def test_builtin_standard_loads():
    [doc] = [d for d in builtin_documents() if d.name == "standard"]
    assert doc.builtin and doc.version == "1.0.0"
    assert doc.resolve_parameters({})["message_size_limit"] == 52428800


@pytest.mark.parametrize("text, expected", [
    ("a: [1, 2", "not valid YAML"),
    ("- just\n- a list\n", "a template is a YAML mapping"),
    (MINIMAL.replace("kind: ConfigurationTemplate", "kind: Other"), "kind: 'ConfigurationTemplate' was expected"),
    (MINIMAL.replace("version: 1.0.0", "version: one"), "metadata.version: 'one' does not match"),
    (MINIMAL.replace("metadata: {", "metadat: {"), "metadat: unknown key"),
    (MINIMAL.replace("nginx: {}, ", ""), "components.nginx: required key is missing"),
    (MINIMAL.replace("haproxy: {}}", "haproxy: {}, exim: {}}"), "components.exim: unknown key"),
    (MINIMAL.replace("default: 10,", "default: 1000,"), "parameters.size.default: 1000 is above the maximum 100"),
    (MINIMAL.replace("{type: boolean", "{type: bool"), "parameters.flag.type: 'bool' is not one of"),
    (MINIMAL + "metadata: {name: dup, version: 1.0.0}\n", "duplicate key 'metadata'"),
])
def test_bad_documents_are_rejected_with_a_path(text, expected):
    with pytest.raises(TemplateError) as err:
        load_document(text, "t.yaml")
    assert expected in str(err.value)


def test_yaml_errors_point_at_the_line():
    with pytest.raises(TemplateError) as err:
        load_document("apiVersion: rupost/v1\nkind: [\n", "broken.yaml")
    assert str(err.value).startswith("broken.yaml:3:")


@pytest.mark.parametrize("values, expected", [
    ({"size": 0}, "parameters.size: 0 is below the minimum 1"),
    ({"size": True}, "parameters.size: expected an integer, got True"),
    ({"flag": "yes"}, "parameters.flag: expected boolean, got 'yes'"),
    ({"tz": "Europe/Moscow; rm"}, "parameters.tz: 'Europe/Moscow; rm' does not match"),
    ({"sise": 5}, "parameters.sise: unknown parameter (declared: flag, groups, size, tz)"),
    ({"groups": ["a.example"]}, "parameters.groups: item 1: expected list, got 'a.example'"),
    ({"groups": [["a.example"], ["B.example"]]}, "parameters.groups: item 2: 'B.example' does not match"),
])
def test_parameter_values_are_typed(values, expected):
    doc = load_document(MINIMAL)
    with pytest.raises(TemplateError) as err:
        doc.resolve_parameters(values)
    assert expected in str(err.value)


def test_a_list_of_lists_is_checked_item_by_item():
    assert load_document(MINIMAL).resolve_parameters({"groups": [["a.example", "b.example"]]})["groups"] == [
        ["a.example", "b.example"]]
    with pytest.raises(TemplateError, match="parameters.groups.items.typo: unknown key"):
        load_document(MINIMAL.replace("items: {type: list,", "items: {type: list, typo: 1,"))


def test_every_bad_parameter_is_reported_at_once():
    doc = load_document(MINIMAL)
    with pytest.raises(TemplateError) as err:
        doc.resolve_parameters({"size": 0, "flag": 3})
    assert "parameters.size" in str(err.value) and "parameters.flag" in str(err.value)


def test_rendering_keeps_types_of_whole_expressions():
    out = render_components({"x": {"port": "{{ p }}", "text": "port {{ p }}", "items": ["{{ p + 1 }}"]}},
                            {"p": 25})
    assert out == {"x": {"port": 25, "text": "port 25", "items": [26]}}


def test_unknown_names_are_errors_with_the_key_path():
    with pytest.raises(TemplateError) as err:
        render_components({"nginx": {"web": {"server_name": "{{ node.fqnd }}"}}}, {"node": {"fqdn": "x"}})
    assert str(err.value).startswith("components.nginx.web.server_name:")
    assert "fqnd" in str(err.value)


@pytest.mark.parametrize("expression", [
    "{{ ''.__class__.__mro__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ node.items.__self__ }}",
])
def test_rendering_is_sandboxed(expression):
    with pytest.raises(TemplateError):
        render_components({"x": {"v": expression}}, {"node": {"a": 1}})


def test_builtin_template_is_structure_only():
    """Templates hold structure, never user data (SPEC §3): no addresses in the builtin."""
    text = yaml.safe_dump(builtin_documents()[0].data)
    assert "@rupost.test" not in text and "password:" not in text
