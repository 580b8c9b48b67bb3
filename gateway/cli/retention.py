"""`contactgate retention`: archive children at 18 (or on a recorded death), purge them after the
retention period, and show a child's retention state."""

from __future__ import annotations

import json

import click

from gateway.cli.base import OFFICER_FLAG, Context, fail, group, pass_ctx


@group("retention")
def retention_group() -> None:
    """Archive children at 18 (or on a recorded death); purge them after the retention period."""


@retention_group.command("run")
@click.option("--compact", is_flag=True,
              help="PostgreSQL: VACUUM FULL the purged tables so that no freed bytes stay in their files "
                   "(locks each table while it is rewritten: for a maintenance window).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object with the counts.")
@pass_ctx
def retention_run(ctx: Context, compact: bool, as_json: bool) -> None:
    """Archive every child now due and purge every archived child past its purge day; print counts.

    Idempotent, and safe to run from cron while the gateway serves (small batches, one transaction
    each, every child locked and checked again). Settings: CONTACTGATE_RETENTION_VIEW_DAYS,
    CONTACTGATE_RETENTION_PURGE_YEARS."""
    from gateway.index import retention

    counts = retention.run(ctx.engine, ctx.trail, retention.Policy.from_settings(ctx.settings), compact=compact)
    if as_json:
        click.echo(json.dumps({"archived": counts.archived, "purged": counts.purged}))
    else:
        click.echo(f"archived {counts.archived}, purged {counts.purged}")


@retention_group.command("show")
@click.argument("child_id")
@OFFICER_FLAG
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_ctx
def retention_show(ctx: Context, child_id: str, named, as_json: bool) -> None:
    """A child's retention state (live, archived or purged) and dates; for an archived child still
    in its viewing period, its record and involvements."""
    officer = ctx.signed_in(("data_quality",), action="retention show", named=named)
    from gateway.index import retention

    with ctx.engine.begin() as conn:  # a shielded child's location as the review queue shows it
        state = retention.show(conn, ctx.trail, child_id, officer.officer_id,
                               retention.Policy.from_settings(ctx.settings), officer_roles=officer.roles,
                               shield_roles=ctx.settings.review_shield_roles)
    if state is None:
        fail(f"no child {child_id.strip()}")
    if as_json:
        click.echo(json.dumps(state, sort_keys=True, default=str))
        return
    click.echo(f"{state['child_id']}: {state['state']}"
               + (f" (merged into {state['merged_into']})" if state.get("merged_into") else ""))
    for name in ("reason", "archive_due", "archived_at", "sealed_from", "purge_after", "purged_at"):
        if state.get(name):
            click.echo(f"  {name.replace('_', ' ')}: {state[name]}")
    if state.get("sealed"):
        click.echo("  record sealed: the viewing period is over; it is kept, shown to no one, until purged")
    if "record" in state:
        from gateway.index.review import DISPLAY_FIELDS

        withheld = state.get("location_withheld")
        for name, pick in DISPLAY_FIELDS:
            shown = "withheld: the child is shielded" if withheld and name == "address" else pick(state["record"])
            click.echo(f"  {name:<16} {shown}")
        death = (state["record"].get("identity") or {}).get("date_of_death")
        if death:
            click.echo(f"  {'date of death':<16} {death}")
        for inv in state["involvements"]:
            click.echo(f"  involvement: {inv['org']} {inv['service']} from {inv['start']}"
                       + (f" to {inv['end']}" if inv["end"] else "")
                       + (f", {inv['practitioner_name']}" if inv["practitioner_name"] else ""))
        if withheld:
            click.echo("  the child is shielded: the address, settings, carers' and practitioners' contact "
                       "details are withheld (CONTACTGATE_REVIEW_SHIELD_ROLES)")
