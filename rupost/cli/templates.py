"""rupost templates: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.group()
def template():
    """Manage configuration templates."""


@template.command("list")
@json_option
@pass_ctx
def template_list(c, as_json):
    emit(c.app.templates.list(), as_json, ["name", "version", "kind", "active", "description"])


def _split_ref(ref: str) -> tuple[str, str | None]:
    name, _, version = ref.partition("@")
    return name, version or None


@template.command("show")
@click.argument("ref", metavar="NAME[@VERSION]")
@pass_ctx
def template_show(c, ref):
    click.echo(c.app.templates.show(*_split_ref(ref))["body"], nl=False)


@template.command("activate")
@click.argument("ref", metavar="NAME[@VERSION]")
@pass_ctx
def template_activate(c, ref):
    c.app.templates.activate(*_split_ref(ref))
    click.echo(f"template {ref} is active; run rupost deploy to apply it")


def _read_template_file(path: str) -> tuple[str, str]:
    from rupost.templating.document import MAX_TEMPLATE_BYTES

    with click.open_file(path, "rb") as fh:
        data = fh.read(MAX_TEMPLATE_BYTES + 1)
    try:
        return data.decode("utf-8"), path
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


@template.command("validate")
@click.argument("path", metavar="FILE")
@pass_ctx
def template_validate(c, path):
    """Check a template file completely (render included) without storing it."""
    doc = c.app.templates.validate(*_read_template_file(path))
    click.echo(f"{doc.name}@{doc.version} is valid" + (f" (extends {doc.extends})" if doc.extends else ""))


@template.command("import")
@click.argument("path", metavar="FILE")
@pass_ctx
def template_import(c, path):
    """Validate and store a custom template (versions are immutable)."""
    t = c.app.templates.import_text(*_read_template_file(path))
    click.echo(f"template {t['name']}@{t['version']} imported; activate it with "
               f"rupost template activate {t['name']}@{t['version']}")
    if t["raw_snippets"]:
        click.echo(f"note: raw snippets, passed to the daemons as written on every node once deployed: "
                   f"{', '.join(t['raw_snippets'])}")


@template.command("export")
@click.argument("ref", metavar="NAME[@VERSION]")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to a file.")
@pass_ctx
def template_export(c, ref, output):
    """Print a template as it was imported."""
    text = c.app.templates.export(*_split_ref(ref))
    if output:
        with open(output, "w") as fh:
            fh.write(text)
    else:
        click.echo(text, nl=False)


@template.command("diff")
@click.argument("a", metavar="A[@VERSION]")
@click.argument("b", metavar="B[@VERSION]")
@pass_ctx
def template_diff(c, a, b):
    """Unified diff between two templates (full documents, extends applied)."""
    click.echo(c.app.templates.diff(a, b) or "no differences", nl=False)


@template.command("remove")
@click.argument("ref", metavar="NAME[@VERSION]")
@pass_ctx
def template_remove(c, ref):
    """Remove a custom template version (never the active one or a builtin)."""
    c.app.templates.remove(*_split_ref(ref))
    click.echo(f"template {ref} removed")


@template.command("parameters")
@json_option
@pass_ctx
def template_parameters(c, as_json):
    """Parameters of the active template and their values."""
    emit(c.app.templates.parameters(), as_json, ["name", "type", "value", "default", "description"])


@template.command("set")
@click.argument("assignments", nargs=-1, metavar="[NAME=VALUE]...")
@click.option("--unset", multiple=True, metavar="NAME", help="Return a parameter to its default.")
@pass_ctx
def template_set(c, assignments, unset):
    """Set parameters of the active template (VALUE: as typed for string parameters, YAML for the
    others: 10, true, [a, b]); then rupost deploy."""
    import yaml

    if not assignments and not unset:
        raise click.UsageError("name at least one NAME=VALUE or --unset NAME")
    types = {p["name"]: p["type"] for p in c.app.templates.parameters()}
    updates = {}
    for item in assignments:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE")
        if types.get(name) == "string" or not value:
            updates[name] = value  # as typed: "[10.0.0.1]:25" is a host, not YAML
            continue
        try:
            updates[name] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise click.BadParameter(f"{name}: {value!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    c.app.templates.set_parameters(updates, list(unset))
    click.echo("parameters stored; run rupost deploy --plan to see the effect")
