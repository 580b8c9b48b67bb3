"""`contactgate roles`: which fields of a child's record each practitioner role may see."""

from __future__ import annotations

import click

from gateway.cli.base import Context, fail, group, pass_ctx


@group("roles")
def roles_group() -> None:
    """Which fields of a child's record each practitioner role may see (the home's roles.json)."""


@roles_group.command("show")
@pass_ctx
def roles_show(ctx: Context) -> None:
    """Print the table in force: each role and the field groups it may see beyond the minimum."""
    from gateway.index import disclosure

    try:
        rules = disclosure.load(ctx.settings.roles_path)
    except disclosure.RolesFileError as exc:
        fail(str(exc))
    for line in disclosure.table(rules):
        click.echo(line)
