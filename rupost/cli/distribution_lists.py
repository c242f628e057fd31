"""rupost distribution-lists: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import sys

import click

from . import emit, json_option, main, pass_ctx


@main.group("distribution-lists")
def distribution_lists():
    """Manage distribution lists (static and LDAP-filter based)."""


@distribution_lists.command("add")
@click.argument("address")
@click.option("--member", "members", multiple=True, help="Static member address (repeatable; local or external).")
@click.option("--filter", "filter_name", default=None, help="Named LDAP filter: members are the users it matches.")
@click.option("--sender-policy", default="anyone", show_default=True,
              type=click.Choice(["anyone", "internal", "members"]),
              help="Who may write to the list: anyone, authenticated users only, or its members only.")
@click.option("--name", "display_name", default="")
@click.option("--max-drop-share", type=float, default=None,
              help="Largest share of members one update may drop (default: the global setting).")
@pass_ctx
def add(c, address, members, filter_name, sender_policy, display_name, max_drop_share):
    out = c.app.distribution_lists.add(address, members=list(members), filter_name=filter_name,
                                       sender_policy=sender_policy, display_name=display_name,
                                       max_drop_share=max_drop_share)
    click.echo(f"distribution list {out['address']} added ({len(out['members'])} static member(s))")
    if out.get("update"):
        u = out["update"]
        click.echo(f"members from filter {filter_name}: {u.get('status')} {u.get('members', '')} {u.get('error', '')}"
                   .rstrip())


@distribution_lists.command("list")
@click.option("--domain", default=None)
@json_option
@pass_ctx
def list_(c, domain, as_json):
    emit(c.app.distribution_lists.list(domain), as_json,
         ["address", "kind", "filter", "sender_policy", "member_count", "enabled", "last_update_status"])


@distribution_lists.command("show")
@click.argument("address")
@pass_ctx
def show(c, address):
    emit(c.app.distribution_lists.show(address), True)


@distribution_lists.command("set")
@click.argument("address")
@click.option("--sender-policy", default=None, type=click.Choice(["anyone", "internal", "members"]))
@click.option("--filter", "filter_name", default=None)
@click.option("--no-filter", is_flag=True, help="Make it a static list (drops the filter's members).")
@click.option("--max-drop-share", type=float, default=None)
@click.option("--enable/--disable", "enabled", default=None)
@pass_ctx
def set_(c, address, sender_policy, filter_name, no_filter, max_drop_share, enabled):
    out = c.app.distribution_lists.set(address, sender_policy=sender_policy, filter_name=filter_name,
                                       clear_filter=no_filter, max_drop_share=max_drop_share, enabled=enabled)
    click.echo(f"distribution list {out['address']} updated")


@distribution_lists.command("remove")
@click.argument("address")
@pass_ctx
def remove(c, address):
    c.app.distribution_lists.remove(address)
    click.echo(f"distribution list {address} removed")


@distribution_lists.group("members")
def members():
    """Static members of a list."""


@members.command("list")
@click.argument("address")
@json_option
@pass_ctx
def members_list(c, address, as_json):
    emit(c.app.distribution_lists.show(address)["members"], as_json, ["address", "source"])


@members.command("add")
@click.argument("address")
@click.argument("member", nargs=-1, required=True)
@pass_ctx
def members_add(c, address, member):
    n = c.app.distribution_lists.add_members(address, list(member))
    click.echo(f"{n} member(s) added to {address}")


@members.command("remove")
@click.argument("address")
@click.argument("member", nargs=-1, required=True)
@pass_ctx
def members_remove(c, address, member):
    n = c.app.distribution_lists.remove_members(address, list(member))
    click.echo(f"{n} member(s) removed from {address}")


@distribution_lists.command("update")
@click.argument("address", required=False)
@click.option("--force", is_flag=True, help="Apply even when more members would be dropped than allowed.")
@json_option
@pass_ctx
def update(c, address, force, as_json):
    """Refresh the members of dynamic lists from their LDAP filters (the updater job)."""
    results = c.app.distribution_lists.update(address, force=force)
    if as_json:
        emit(results, True)
    else:
        for r in results:
            detail = (f"{r.get('members')} member(s), +{r.get('added')} -{r.get('dropped')}"
                      if "members" in r else "")
            click.echo(f"{r['address']}: {r['status']} {detail}".rstrip()
                       + (f": {r['error']}" if r.get("error") else ""))
    if any(r["status"] in ("refused", "kept") for r in results):
        sys.exit(2)


@distribution_lists.command("update-all")
@click.option("--no-sync", is_flag=True, help="Do not sync the LDAP domains first.")
@json_option
@pass_ctx
def update_all(c, no_sync, as_json):
    """What rupost-distribution-lists-updater.timer runs: sync every LDAP domain (mailboxes,
    aliases, GAL), then refresh every dynamic list."""
    synced = [] if no_sync else c.app.directories.sync_all()
    results = c.app.distribution_lists.update()
    if as_json:
        emit({"ldap_domains": synced, "lists": results}, True)
    else:
        for r in synced:
            click.echo(f"ldap-domain {r['name']}: " + ("synced" if r.get("ok") else f"FAILED: {r['error']}"))
        counts = {}
        for r in results:
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        click.echo("lists: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"))
        for r in results:
            if r["status"] in ("refused", "kept"):
                click.echo(f"  {r['address']}: {r['status']}: {r['error']}")
    if any(not r.get("ok") for r in synced) or any(r["status"] in ("refused", "kept") for r in results):
        sys.exit(2)
