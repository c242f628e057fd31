"""rupost deploy: CLI commands (thin: parse, call the service layer, print)."""
from __future__ import annotations

import click

from . import emit, json_option, main, pass_ctx


@main.command()
@click.option("--plan", "plan_only", is_flag=True,
              help="Render, run every component's checker and show the diff; change nothing.")
@click.option("--force", is_flag=True, help="Overwrite files that were changed by hand (drift).")
@click.option("--this-node", is_flag=True, help="Only this node, not a cluster-wide rolling deploy.")
@click.option("--rollback", "rollback", is_flag=False, flag_value="previous", default=None, metavar="[GENERATION]",
              help="Return to a kept generation (default: the previous applied one).")
@json_option
@pass_ctx
def deploy(c, plan_only, force, this_node, rollback, as_json):
    """Deploy the active configuration template onto this node."""
    if rollback is not None:
        if rollback != "previous" and not rollback.isdigit():
            raise click.BadParameter(f"{rollback!r} is not a generation number", param_hint="--rollback")
        result = c.app.deploys.rollback(None if rollback == "previous" else int(rollback), force)
        _print_result(result, as_json)
        return
    plan = c.app.deploys.plan(check=plan_only)
    if plan_only:
        drift = c.app.deploys.drift()
        if as_json:
            emit({"template": f"{plan.template}@{plan.version}", "changed": plan.changed, "diffs": plan.diffs,
                  "checked": plan.checked, "digest": plan.digest, "drift": drift}, True)
            return
        for d in drift:
            click.echo(f"drift: {d['component']}/{d['path']} ({d['state']}): deploy needs --force")
        if not plan.has_changes:
            click.echo("no changes")
        else:
            for component in plan.changed:
                click.echo(plan.diffs[component], nl=False)
            click.echo(f"components that would change: {', '.join(plan.changed)}")
        click.echo(f"checked by: {', '.join(plan.checked)}")
        return
    if not this_node and len(c.app.nodes.list()) > 1:
        rollout = c.app.rollouts.run(force)
        if as_json:
            emit(rollout, True)
            return
        for step in rollout["steps"]:
            click.echo(f"  {step['node']}: {step['status']}"
                       + (f" (generation {step['generation']})" if step["generation"] else "")
                       + (f": {step['error']}" if step["error"] else ""))
        click.echo(f"rollout {rollout['id']} of {rollout['template']}: {rollout['status']}")
        return
    _print_result(c.app.deploys.deploy(plan, force), as_json)


def _print_result(result, as_json: bool) -> None:
    if as_json:
        emit(result.as_dict(), True)
        return
    for step in result.steps:
        click.echo(f"  {'ok ' if step.ok else 'FAIL'} {step.step}" + (f": {step.detail}" if step.detail else ""))
    if result.result == "unchanged":
        click.echo(f"no changes: generation {result.generation} is live")
    else:
        click.echo(f"generation {result.generation} is live "
                   f"(started: {', '.join(result.started) or '-'}; reloaded: {', '.join(result.reloaded) or '-'})")
