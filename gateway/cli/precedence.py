"""`contactgate precedence`: which kind of organisation's value of each field the index shows."""

from __future__ import annotations

import click

from gateway.cli.base import Context, fail, group, pass_ctx


@group("precedence")
def precedence_group() -> None:
    """Which kind of organisation's value of each field is shown (the home's precedence.json)."""


@precedence_group.command("show")
@pass_ctx
def precedence_show(ctx: Context) -> None:
    """Print the precedence in force: per field, the tiers of kinds of organisation, best first."""
    from gateway.index import precedence

    try:
        rules = precedence.load(ctx.settings.precedence_path)
    except precedence.PrecedenceFileError as exc:
        fail(str(exc))
    for line in rules.table():
        click.echo(line)
