"""rupost sizing: the load parameters for a number of mailboxes, the limits and memory they give."""
from __future__ import annotations

import click

from . import emit, main, pass_ctx


@main.command("sizing")
@click.option("--mailboxes", type=int, required=True, help="Mailboxes this node serves.")
@click.option("--sessions-per-user", type=float, default=1.0, show_default=True,
              help="IMAP sessions a user's clients hold at once (a desktop client and a phone: 2).")
@click.option("--ldap-domains", type=int, default=None,
              help="LDAP domains (memcached's share); default: the directories configured.")
@click.option("--apply", "apply_", is_flag=True,
              help="Store the parameters in the active template's values (then rupost deploy).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def sizing(c, mailboxes, sessions_per_user, ldap_domains, apply_, as_json):
    """Work out max_imap_sessions, max_smtp_sessions, max_web_sessions, sogo_workers and
    memcached_memory_mb for MAILBOXES, every limit derived from them and the memory the node needs at full load."""
    estimate = c.app.sizing.estimate(mailboxes, sessions_per_user, ldap_domains)
    if apply_:
        c.app.sizing.apply(estimate)
    if as_json:
        emit({**estimate, "applied": apply_}, True)
        return
    click.echo(f"{mailboxes} mailboxes, {sessions_per_user:g} IMAP session(s) per user, "
               f"{estimate['ldap_domains']} LDAP domain(s)")
    click.echo("\nparameters (current value in brackets):")
    for name, value in estimate["parameters"].items():
        click.echo(f"  {name} = {value}  [{estimate['current'][name]}]")
    click.echo("\nlimits derived from them (docs/templates.md#capacity):")
    for name, value in estimate["limits"].items():
        click.echo(f"  {name} = {value}")
    memory = estimate["memory"]
    click.echo(f"\nmemory at full load: about {memory['total_mib']} MiB "
               f"(IMAP sessions {memory['sessions_mib']} MiB at {estimate['session_memory_kib']} KiB each, "
               f"memcached {memory['memcached_mib']}, SOGo {memory['sogo_mib']} for "
               f"{estimate['parameters']['sogo_workers']} workers, the rest {memory['base_mib']})")
    if estimate["imap_hibernate_after"] > 0:
        click.echo(f"IMAP sessions idling {estimate['imap_hibernate_after']} s move to imap-hibernate; a tenth "
                   "of them counted as active at once")
    else:
        click.echo(f"with imap_hibernate_after=30 (idling sessions moved to imap-hibernate), the IMAP sessions "
                   f"would take about {memory['sessions_mib_hibernating']} MiB")
    limits = estimate["limits"]
    click.echo(f"kernel: sysctl fs.inotify.max_user_instances >= {limits['inotify_instances']} and "
               f"fs.inotify.max_user_watches >= {limits['inotify_watches']} (IDLE notifications; "
               "/usr/lib/sysctl.d/60-rupost.conf); "
               f"open files >= {limits['open_files']} (the service backend's limit)")
    if apply_:
        click.echo("\nparameters stored; run rupost deploy --plan to see the effect")
    else:
        click.echo("\nnothing stored (--apply stores the parameters)")
