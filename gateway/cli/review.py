"""`contactgate review`: the data-quality review queue, pairs of children that may be one child
(list, show, link, distinct, merge, unmerge) and value conflicts (conflicts, conflict, settle); each
action audited with its officer."""

from __future__ import annotations

import datetime as dt
import json

import click

from gateway.cli.base import OFFICER_FLAG, Context, Refused, group, pass_ctx
from gateway.trust import registry


@group("review")
def review() -> None:
    """Work the data-quality review queue: pairs of children that may be one child."""


def _review_call(ctx: Context, actor, fn, *args):
    """Run a review action (which audits itself) in one transaction, as ``actor``; a refusal is
    audited too (officer.refused), as in the console."""
    from gateway.index.review import ReviewError

    try:
        with ctx.engine.begin() as conn:
            return fn(conn, ctx.trail, *args, actor.officer_id, dt.datetime.now(dt.timezone.utc))
    except ReviewError as exc:
        registry.record_refusal(ctx.engine, ctx.trail, actor, f"review {fn.__name__}", str(exc))
        raise Refused(str(exc)) from None


def _audited_read(ctx: Context, officer, show, entry_id: int) -> dict:
    """``show`` (a read of a queue entry that audits itself) in one transaction, as ``officer``,
    with what the officer's roles may see of a shielded child."""
    from gateway.index.review import ReviewError

    try:
        with ctx.engine.begin() as conn:
            return show(conn, ctx.trail, entry_id, officer.officer_id, officer_roles=officer.roles,
                        shield_roles=ctx.settings.review_shield_roles)
    except ReviewError as exc:
        raise Refused(str(exc)) from None


@review.command("list")
@click.option("--status", type=click.Choice(["open", "linked", "distinct", "merged", "all"]), default="open",
              show_default=True, help="Which entries.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def review_list(ctx: Context, status: str, limit: int, as_json: bool) -> None:
    """Entries in the queue, oldest first."""
    officer = ctx.signed_in(("data_quality",), action="review list")
    from gateway.index import review as queue

    with ctx.reader.connect() as conn:
        entries = queue.list_entries(conn, None if status == "all" else status, limit, officer_roles=officer.roles,
                                     shield_roles=ctx.settings.review_shield_roles)

    def line(e: dict) -> str:
        score = "withheld" if e["score"] is None else f"{e['score']:.3f}"  # None: a child is shielded
        return (f"#{e['id']}  {e['status']:<8}  {e['child_id']} ~ {e['candidate_child_id']}  "
                f"score={score}  from {e['org']}:{e['source_record_id']}  {e['created_at']}")

    _echo_entries(entries, as_json, line, "no entries")


def _echo_entries(entries: list[dict], as_json: bool, line, none: str) -> None:
    """One JSON object per entry, or ``line(entry)``; ``none`` when there are none (not in JSON)."""
    for e in entries:
        click.echo(json.dumps(e, sort_keys=True) if as_json else line(e))
    if not entries and not as_json:
        click.echo(none)


@review.command("show")
@click.argument("review_id", type=int)
@OFFICER_FLAG
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_ctx
def review_show(ctx: Context, review_id: int, named, as_json: bool) -> None:
    """The two records side by side, with the field agreements and the score."""
    officer = ctx.signed_in(("data_quality",), action="review show", named=named)
    from gateway.index import review as queue

    entry = _audited_read(ctx, officer, queue.show, review_id)
    if as_json:
        click.echo(json.dumps(entry, sort_keys=True, default=str))
        return
    if entry["location_withheld"]:  # no number: each would say whether the withheld addresses agree
        score = f"score withheld (model {entry['model_version']})"
    else:
        score = (f"score {entry['score']:.4f} (model {entry['model_version']}; "
                 f"now {entry['comparison_now']['probability']:.4f})")
    click.echo(f"review #{entry['id']}  {entry['status']}  {score}  "
               f"sent by {entry['org']}:{entry['source_record_id']} at {entry['created_at']}")
    left, right = entry["stored_as"], entry["candidate"]
    rows = [("child id", left["child_id"], right["child_id"])]
    for name, pick in queue.DISPLAY_FIELDS:
        rows.append((name, pick(left["record"]), pick(right["record"])))
    width = max(len(str(a)) for _, a, _ in rows) + 2
    levels = entry["comparison_now"]["levels"]
    weights = entry["comparison_now"].get("weights")  # absent when the location is withheld
    for name, a, b in rows:
        click.echo(f"{name:<16} {str(a):<{width}} {b}")
    click.echo("agreement: " + ", ".join(f"{f}={levels[f]}" + ("" if weights is None else f" ({weights.get(f, 0):+.1f})")
                                         for f in sorted(levels)))
    if entry["comparison_now"]["identifiers"]:
        click.echo(f"NHS / pupil numbers: {entry['comparison_now']['identifiers']}")
    if entry["comparison_now"]["twins"]:
        click.echo("looks like twins or siblings: never linked automatically")
    if entry["location_withheld"]:
        click.echo("a child of this pair is shielded: the location of both is withheld, and with it every "
                   "weight and score (each would say whether their addresses agree)")


@review.command("link")
@click.argument("review_id", type=int)
@OFFICER_FLAG
@pass_ctx
def review_link(ctx: Context, review_id: int, named) -> None:
    """The pair are one child: the record held for review joins the existing child."""
    actor = ctx.signed_in(("data_quality",), action="review link", named=named)
    from gateway.index import review as queue

    merge_id = _review_call(ctx, actor, queue.link, review_id)
    click.echo(f"review #{review_id} linked (merge {merge_id}; undo with `contactgate review unmerge {merge_id}`)")


@review.command("distinct")
@click.argument("review_id", type=int)
@OFFICER_FLAG
@pass_ctx
def review_distinct(ctx: Context, review_id: int, named) -> None:
    """The pair are different children: never linked or queued again."""
    actor = ctx.signed_in(("data_quality",), action="review distinct", named=named)
    from gateway.index import review as queue

    _review_call(ctx, actor, queue.distinct, review_id)
    click.echo(f"review #{review_id}: recorded as different children")


@review.command("merge")
@click.argument("survivor")
@click.argument("merged")
@OFFICER_FLAG
@pass_ctx
def review_merge(ctx: Context, survivor: str, merged: str, named) -> None:
    """Merge child MERGED into SURVIVOR (MERGED's id then resolves to SURVIVOR)."""
    actor = ctx.signed_in(("data_quality",), action="review merge", named=named)
    from gateway.index import review as queue

    merge_id = _review_call(ctx, actor, queue.merge, survivor, merged)
    click.echo(f"merge {merge_id}: {merged} merged into {survivor} "
               f"(undo with `contactgate review unmerge {merge_id}`)")


@review.command("unmerge")
@click.argument("merge_id", type=int)
@OFFICER_FLAG
@pass_ctx
def review_unmerge(ctx: Context, merge_id: int, named) -> None:
    """Undo a merge: both children as they were, each with its own records and involvements."""
    actor = ctx.signed_in(("data_quality",), action="review unmerge", named=named)
    from gateway.index import review as queue

    _review_call(ctx, actor, queue.unmerge, merge_id)
    click.echo(f"merge {merge_id} undone")


# ---- value conflicts: a lower-precedence source disagreed with the value shown (gateway.index.settling) ----

@review.command("conflicts")
@click.option("--status", type=click.Choice(["open", "kept", "applied", "withdrawn", "all"]), default="open",
              show_default=True, help="Which value conflicts.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@pass_ctx
def review_conflicts(ctx: Context, status: str, limit: int, as_json: bool) -> None:
    """Value conflicts, oldest first: a source of a lower precedence disagreed with the value shown."""
    officer = ctx.signed_in(("data_quality",), action="review conflicts")
    from gateway.index import settling

    with ctx.reader.connect() as conn:
        entries = settling.list_conflicts(conn, None if status == "all" else status, limit,
                                          officer_roles=officer.roles, shield_roles=ctx.settings.review_shield_roles)

    def line(e: dict) -> str:
        if e["location_withheld"]:
            return f"#{e['id']}  {e['status']:<9}  {e['child_id']}  {e['field']}  (a shielded child: withheld)"
        sub, shown = e["submitted"], e["shown"]
        return (f"#{e['id']}  {e['status']:<9}  {e['child_id']}  {e['field']}: {sub.get('org')} "
                f"({sub.get('at')}) disagrees with {shown.get('org')} ({shown.get('at')}), shown")

    _echo_entries(entries, as_json, line, "no value conflicts")


@review.command("conflict")
@click.argument("conflict_id", type=int)
@OFFICER_FLAG
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@pass_ctx
def review_conflict(ctx: Context, conflict_id: int, named, as_json: bool) -> None:
    """Both values of a value conflict, who supplied each and when (an audited read of the child)."""
    officer = ctx.signed_in(("data_quality",), action="review conflict", named=named)
    from gateway.index import settling

    entry = _audited_read(ctx, officer, settling.show, conflict_id)
    if as_json:
        click.echo(json.dumps(entry, sort_keys=True, default=str))
        return
    click.echo(f"value conflict #{entry['id']}  {entry['status']}  child {entry['child_id']}  field {entry['field']}")
    if entry["location_withheld"]:
        click.echo("the child is shielded: this location field, and who supplied it, are withheld")
        return
    for name, label in (("shown", "shown    "), ("submitted", "submitted")):
        side = entry[name]
        click.echo(f"{label}  {side.get('org')} ({side.get('kind')}) record {side.get('source_record_id')} "
                   f"received {side.get('at')}: {json.dumps(side.get('value'), sort_keys=True)}")
    click.echo(f"settle with `contactgate review settle {entry['id']} --keep shown|submitted`")


@review.command("settle")
@click.argument("conflict_id", type=int)
@click.option("--keep", type=click.Choice(["shown", "submitted"]), required=True,
              help="shown: the value shown stands; submitted: the lower source's value is shown from now on.")
@OFFICER_FLAG
@pass_ctx
def review_settle(ctx: Context, conflict_id: int, keep: str, named) -> None:
    """Settle a value conflict (audited)."""
    actor = ctx.signed_in(("data_quality",), action="review settle", named=named)
    from gateway.index import settling

    def settle(conn, trail, conflict_id, keep, officer_id, now):
        return settling.settle(conn, trail, conflict_id, keep, officer_id, now, officer_roles=actor.roles,
                               shield_roles=ctx.settings.review_shield_roles)

    status = _review_call(ctx, actor, settle, conflict_id, keep)
    click.echo(f"value conflict #{conflict_id} {status}")
